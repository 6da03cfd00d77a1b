"""Fused CPU kernels (numba): one pass over memory, not twenty.

A merge written as torch operations reads and writes the whole chunk once per operation
(subtract, compare, mask, weigh, elect, sum, divide, cast: about 30 for TIES), and on the CPU
that memory traffic, not the arithmetic, sets the time. These kernels do all of it per element
in registers, in blocks of `codec.BLOCK` elements that stay in the L1 cache, with the
bf16 <-> float32 conversions inside. They release the GIL (``nogil``), so callers may run
chunks on threads. They compute exactly what the torch implementations compute (same
operations, same order, float32), which the tests check element for element.

- `codec`: bfloat16 reads and writes, SplitMix64 draws, the bracket collector (shared);
- `merge`: the merge accelerators' kernels (linear, task vectors, SLERP's dots, top-k counts)
  and the executor's finiteness check;
- `analysis`: the kernels of `alloy.analysis.stats` (the Gram matrix, the task-vector pass),
  with the task-vector pass's output as named arrays.
- `distance`: the merge report's distance from the base (`alloy.report.distance`).

Inputs are 1-D arrays of float32, or of uint16 holding bfloat16 bits; outputs the same. Every
kernel is compiled on first use (and cached on disk by numba). The package is the one module
tree exempt from mypy's strict checks (numba's decorators are untyped).
"""
