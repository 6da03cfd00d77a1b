"""Accelerators: the merge methods computed over row chunks, in bounded memory.

Each method's definition is its whole-tensor function (``fn``, in `alloy.methods`). A method
whose merge can be streamed registers one of these factories beside it (``accelerator``): the
same result, tensor by tensor, from row chunks, after reduction passes where the method needs
whole-tensor statistics, and with the fused CPU kernels (`alloy.kernels.fused`) where they
apply. The executor uses the accelerator when there is one; ``tests/methods/test_streamed.py``
checks it equals ``fn``.

- `stream`: the protocol (`StreamedMerge`, `Chunk`, `TensorContext`);
- `select`: exact top-k of a streamed tensor (TIES, Breadcrumbs thresholds);
- `task_vectors`, `linear`, `slerp`: the accelerators.
"""
