"""The validation and test splits of the evaluation sets.

A set given once (``--eval NAME=FILE``, ``--probe KIND NAME=FILE``) is split by its records:
the records at even positions (the 1st, 3rd, 5th... non-blank line) validate, those at odd
positions test. Interleaving keeps both halves alike when a file is sorted by topic. A set
given with ``--test-eval`` / ``--test-probe`` under the same name is the test split instead,
and the whole first file validates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from alloy.errors import EvalDataError
from alloy.evaluate.data import DataSet, ProbeSet
from alloy.evaluate.run import EvalSets, NamedFile, ProbeSpec, load_sets


@dataclass(frozen=True)
class Splits:
    validation: EvalSets
    test: EvalSets

    def of(self, split: str) -> EvalSets:
        return self.validation if split == "validation" else self.test


def _halves(name: str, n: int) -> None:
    if n < 2:
        raise EvalDataError(
            f"set {name!r} has {n} record; splitting it into validation and test needs at "
            "least 2 (or give its test split with --test-eval / --test-probe)."
        )


def _split_data(d: DataSet) -> tuple[DataSet, DataSet]:
    _halves(d.name, len(d.documents))
    return replace(d, documents=d.documents[0::2]), replace(d, documents=d.documents[1::2])


def _split_probes(p: ProbeSet) -> tuple[ProbeSet, ProbeSet]:
    _halves(p.name, len(p.probes))
    return replace(p, probes=p.probes[0::2]), replace(p, probes=p.probes[1::2])


def load_splits(
    data: Sequence[NamedFile] = (),
    probes: Sequence[ProbeSpec] = (),
    test_data: Sequence[NamedFile] = (),
    test_probes: Sequence[ProbeSpec] = (),
) -> Splits:
    """Parse every file (bad ones fail before any model loads) and split the sets."""
    given = load_sets(data, probes)
    tests = load_sets(test_data, test_probes)
    if given.empty:
        raise EvalDataError("the search needs evaluation sets: give --eval NAME=FILE or --probe.")
    stray = sorted(set(tests.names) - set(given.names))
    if stray:
        raise EvalDataError(
            f"test set {stray[0]!r} has no validation set of the same name; give it with "
            "--eval / --probe too."
        )
    tdata = {d.name: d for d in tests.data}
    tprobes = {p.name: p for p in tests.probes}
    val, test = EvalSets(), EvalSets()
    for d in given.data:
        v, t = (d, tdata[d.name]) if d.name in tdata else _split_data(d)
        val.data.append(v)
        test.data.append(t)
    for p in given.probes:
        if p.name in tprobes and tprobes[p.name].kind != p.kind:
            raise EvalDataError(f"probe set {p.name!r}: its test file is of another kind.")
        vp, tp = (p, tprobes[p.name]) if p.name in tprobes else _split_probes(p)
        val.probes.append(vp)
        test.probes.append(tp)
    return Splits(val, test)
