"""Vocabulary alignment: every model's embedding and head rows put in the output vocabulary's
order before the method merges them (mergekit's ``PermutedVocabulary``, planned from headers).

For each merged token-indexed tensor (``embed_tokens``, ``lm_head``) and each of its inputs,
the plan holds a `RowMap`: the input's row of every output token (-1 where the model lacks it,
or the config forces another source), and the group's *fills*: for the tokens some input lacks,
which inputs' rows stand in (mergekit's order of defaults: a ``tokenizer.tokens`` entry; the
base model's row; the row of the one model that has the token; the mean of the rows of the
models that have it; zeros when none has it). Rows added by ``pad_to_multiple_of`` get the mean
of the input's aligned rows. The rows are gathered as the executor reads each row chunk
(`alloy.plan.vocab_read`): no whole-model copy is made.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch

from alloy.arch.differences import CompatReport
from alloy.arch.infer import is_embedding
from alloy.arch.tokenizer import tokenizer_info
from alloy.arch.vocab_build import VocabInput, Vocabularies, build_vocabularies
from alloy.config.schema import (
    InputSource,
    MergeConfig,
    ModelRef,
    ModelToken,
    TokenizerSpec,
    ZeroToken,
)
from alloy.errors import CheckpointError, ConfigError, ConfigIssue
from alloy.io.sources import TensorInfo
from alloy.plan.models import InputModel

if TYPE_CHECKING:
    from alloy.plan.planner import TensorJob

LISTED = 50  # tokens named per category in the report


@dataclass(frozen=True)
class Fills:
    """The rows of a group's inputs that stand in where an input lacks a token: output row
    ``rows[k]`` is the mean of member ``j``'s row ``ids[k, j]`` over the ``j`` where it is
    >= 0 (zeros where none is)."""

    members: tuple[tuple[ModelRef, str], ...]  # (model, stored tensor name), the job's inputs
    rows: torch.Tensor = field(compare=False)  # [F] int64, ascending
    ids: torch.Tensor = field(compare=False)  # [F, len(members)] int64


@dataclass(frozen=True)
class RowMap:
    """One input of an aligned tensor: output row r is its own row ``own[r]`` when >= 0,
    else the group's fill, and rows from ``tokens`` on (padding) the mean of rows [0, tokens)."""

    model: ModelRef
    name: str
    own: torch.Tensor = field(compare=False)  # [size] int64
    fills: Fills
    tokens: int  # the output vocabulary's tokens (rows beyond: padding)


@dataclass(frozen=True)
class VocabPlan:
    """The output vocabulary of an aligned merge and how each aligned tensor was filled."""

    source: str  # "union", "base", or the model
    size: int  # output rows (the vocabulary padded to pad_to_multiple_of)
    tokens: int
    files: Mapping[str, bytes] | None  # the output tokenizer's files; None: copy the source's
    provenance: Mapping[str, Any]  # report.json's tokenizer section (plain values)
    notes: tuple[str, ...] = ()


def _rows_of(m: InputModel) -> int:
    """The model's vocabulary size: config ``vocab_size`` (or ``text_config``'s), at most its
    embedding's rows."""
    name = m.arch.input_embedding()
    rows = m.weights.info(name).shape[0] if name else None
    cfg = m.config.get("vocab_size") or (m.config.get("text_config") or {}).get("vocab_size")
    found = [v for v in (cfg, rows) if isinstance(v, int)]
    return min(found) if found else 0


def _needs_alignment(spec: TokenizerSpec, models: Sequence[InputModel], out: InputModel) -> bool:
    """``union``, listed tokens and padding always align; ``base`` or a model only when some
    model's vocabulary (its ids below its vocabulary size) differs from the output's."""
    if spec.source == "union" or spec.tokens or spec.pad_to_multiple_of:
        return True

    def vocab(m: InputModel) -> dict[int, str] | None:
        info = tokenizer_info(m.path)
        limit = _rows_of(m)
        return (
            None
            if info is None or info.vocab is None
            else {i: t for i, t in info.vocab.items() if i < limit}
        )

    target = vocab(out)
    return any((v := vocab(m)) is not None and target is not None and v != target for m in models)


class Aligner:
    """Plans the alignment: `view` the models with aligned shapes, then `align` the jobs."""

    def __init__(
        self, config: MergeConfig, models: Mapping[ModelRef, InputModel], members: list[ModelRef]
    ) -> None:
        spec = config.tokenizer
        assert spec is not None
        self.config, self.spec, self.models = config, spec, models
        self.base = config.base_model if config.base_model in members else None
        # the base tokenizer: the config's base model (merged or not), else the first model
        first = config.base_model or members[0]
        ins = {
            r: VocabInput(str(r), models[r].path, _rows_of(models[r]))
            for r in dict.fromkeys([first, *members])
        }
        src = spec.source
        out_src: str | VocabInput = (
            src if isinstance(src, str) else VocabInput(str(src), models[src].path, 0)
        )
        others = [ins[r] for r in members if r != first]
        self.vocabs: Vocabularies = build_vocabularies(
            ins[first], others, out_src, [t.token for t in spec.tokens]
        )
        self.tokens = len(self.vocabs.out)
        pad = spec.pad_to_multiple_of or 1
        self.size = -(-self.tokens // pad) * pad
        self.by_id = {i: t for t, i in self.vocabs.out.items()}
        if len(self.by_id) != self.tokens or max(self.by_id) != self.tokens - 1:
            raise CheckpointError(
                f"the output tokenizer ({spec.source}) has {self.tokens} tokens but ids up to "
                f"{max(self.by_id)}: its ids must run 0..N-1 without gaps to index embedding "
                "rows; fix that model's tokenizer.json"
            )
        self.own = {r: self._own(r, ins[r].rows) for r in members}
        self.rows = {r: ins[r].rows for r in members}
        self.record: dict[str, Any] = {}

    def _own(self, ref: ModelRef, rows: int) -> torch.Tensor:
        vocab = self.vocabs.inputs[str(ref)]
        ids = [vocab.get(self.by_id[i], -1) for i in range(self.tokens)]
        own = torch.tensor(ids, dtype=torch.int64)
        own[own >= rows] = -1
        return torch.cat([own, torch.full((self.size - self.tokens,), -1, dtype=torch.int64)])

    def settle(self, report: CompatReport) -> None:
        """Drop the check's note that the vocabularies differ: this merge aligns them."""
        report.differences[:] = [
            d for d in report.differences if (d.kind, d.key) != ("tokenizer", "vocabulary")
        ]

    def view(self, models: Mapping[ModelRef, InputModel]) -> dict[ModelRef, InputModel]:
        """The models as the planner sees them: token-indexed tensors with the output's rows."""
        out = dict(models)
        for ref, rows in self.rows.items():
            m = models[ref]
            names = [n for n in m.arch.names if is_embedding(n)]
            shapes = {
                n: (self.size, *m.weights.info(n).shape[1:])
                for n in names
                if len(m.weights.info(n).shape) >= 1 and m.weights.info(n).shape[0] >= rows
            }
            out[ref] = dataclasses.replace(
                m,
                weights=cast(Any, _Shaped(m.weights, shapes)),
                config=self.output_config(m.config),
            )
        return out

    def align(self, job: TensorJob) -> TensorJob:
        """``job`` (a `TensorJob`) with a `RowMap` on each input when it is token-indexed."""
        if not job.embedding or job.copy_only or not job.all_inputs:
            return job
        if any(r.model not in self.own or r.info.shape[0] != self.size for r in job.all_inputs):
            return job
        refs = job.all_inputs
        fills, counts = self._fills(job.name, [r.model for r in refs])
        members = tuple((r.model, r.name) for r in refs)
        forced = self._forced()
        maps = []
        for r in refs:
            own = self.own[r.model].clone()
            own[forced] = -1
            maps.append(RowMap(r.model, r.name, own, Fills(members, *fills), self.tokens))
        self.record.setdefault("tensors", {})[job.name] = counts
        new = [dataclasses.replace(r, vocab=m) for r, m in zip(refs, maps)]
        n = len(job.inputs)
        return dataclasses.replace(
            job, inputs=tuple(new[:n]), base=new[n] if job.base is not None else None
        )

    def _forced(self) -> torch.Tensor:
        ids = [self.vocabs.out[t.token] for t in self.spec.tokens if t.force]
        return torch.tensor(ids, dtype=torch.int64)

    def _issue(self, where: str, message: str) -> ConfigError:
        return ConfigError(
            [ConfigIssue(message, where)], self.config.source_file, self.config.lines
        )

    def _fills(
        self, tensor: str, refs: list[ModelRef]
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, Any]]:
        """The group's fill rows and their sources, and how many tokens came from where."""
        own = torch.stack([self.own[r][: self.tokens] for r in refs])  # [M, N]
        present = own >= 0
        count = present.sum(0).tolist()
        listed = {t.token: t for t in self.spec.tokens}
        rows: list[int] = []
        ids: list[list[int]] = []
        kinds: Counter[str] = Counter()
        named: dict[str, list[str]] = {}
        m = len(refs)
        base_i = refs.index(self.base) if self.base in refs else None
        for t in range(self.tokens):
            token = self.by_id[t]
            entry = listed.get(token)
            c = count[t]
            if c == m and not (entry is not None and entry.force):
                kinds["all_models"] += 1
                continue
            row, kind = self._fill(token, t, refs, own, present, c, base_i, entry)
            rows.append(t)
            ids.append(row)
            kinds[kind] += 1
            named.setdefault(kind, []).append(token)
        fill_rows = torch.tensor(rows, dtype=torch.int64)
        fill_ids = torch.tensor(ids, dtype=torch.int64).reshape(len(rows), m)
        counts: dict[str, Any] = {"tokens": self.tokens, "rows": self.size, "from": dict(kinds)}
        counts["padding"] = self.size - self.tokens
        counts["named"] = {k: v[:LISTED] for k, v in named.items()}
        counts["lacking"] = {str(r): int((~present[i]).sum()) for i, r in enumerate(refs)}
        return (fill_rows, fill_ids), counts

    def _fill(
        self,
        token: str,
        t: int,
        refs: list[ModelRef],
        own: torch.Tensor,
        present: torch.Tensor,
        count: int,
        base_i: int | None,
        entry: Any,
    ) -> tuple[list[int], str]:
        """One token's fill: the member ids to average, and what it is (for the provenance)."""
        none = [-1] * len(refs)
        if entry is not None and entry.source is not None:
            return self._listed(token, t, refs, own, entry)
        if count == 0:
            return none, "zero"
        if count == 1:
            j = int(present[:, t].nonzero()[0])
            return [int(own[j, t]) if i == j else -1 for i in range(len(refs))], "one_model"
        if base_i is not None and bool(present[base_i, t]):
            return [int(own[base_i, t]) if i == base_i else -1 for i in range(len(refs))], "base"
        return [int(v) for v in own[:, t]], "averaged"

    def _listed(
        self, token: str, t: int, refs: list[ModelRef], own: torch.Tensor, entry: Any
    ) -> tuple[list[int], str]:
        where = entry.location or f"tokenizer.tokens.{token}"
        kind = "forced" if entry.force else "listed"
        src = entry.source
        if isinstance(src, ZeroToken):
            return [-1] * len(refs), kind
        model = src.model if isinstance(src, ModelToken) else src
        if model not in refs:
            raise self._issue(
                where,
                f"token {token!r} takes its rows from {model}, which this tensor does not merge "
                f"(its models: {', '.join(str(r) for r in refs)}); use one of them",
            )
        j = refs.index(model)
        if isinstance(src, ModelToken):
            vocab = self.vocabs.inputs[str(model)]
            if src.token is not None and src.token not in vocab:
                raise self._issue(where, f"{model} has no token {src.token!r}")
            sid = src.token_id if src.token is None else vocab[src.token]
            assert sid is not None
            if sid >= self.rows[model]:
                raise self._issue(
                    where, f"token id {sid} is beyond {model}'s {self.rows[model]} rows"
                )
        else:
            sid = int(own[j, t])
            if sid < 0:
                raise self._issue(
                    where, f"{model} has no token {token!r}: give a model that has it"
                )
        return [sid if i == j else -1 for i in range(len(refs))], kind

    def finish(self) -> VocabPlan:
        spec = self.spec
        prov: dict[str, Any] = {
            "source": str(spec.source),
            "tokens": self.tokens,
            "rows": self.size,
            "pad_to_multiple_of": spec.pad_to_multiple_of,
            "added": list(self.vocabs.added[:LISTED]),
            "added_count": len(self.vocabs.added),
            "models": {str(r): {"rows": n} for r, n in self.rows.items()},
            **self.record,
        }
        notes = list(self.vocabs.notes)
        for r in self.rows:
            kept = int((self.own[r] >= 0).sum())
            prov["models"][str(r)]["tokens_kept"] = kept
            name = self.models[r].arch.input_embedding()
            stored = self.models[r].weights.info(name).shape[0] if name else 0
            if stored > kept:
                notes.append(
                    f"{r}: {stored - kept} of its {stored} embedding rows hold no token of the "
                    "output vocabulary (padding, or tokens the output does not carry) and are "
                    "not carried into the merge, as in mergekit"
                )
        return VocabPlan(
            str(spec.source), self.size, self.tokens, self.vocabs.files, prov, tuple(notes)
        )

    def output_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """``cfg`` with its vocabulary size set to the output's rows."""
        out = dict(cfg)
        if "vocab_size" in out or not isinstance(out.get("text_config"), dict):
            out["vocab_size"] = self.size
        else:
            out["text_config"] = {**out["text_config"], "vocab_size": self.size}
        return out


class _Shaped:
    """A source whose token-indexed tensors report the output vocabulary's rows (what the
    planner sees; the executor reads the real source through the `RowMap`)."""

    def __init__(self, inner: Any, shapes: dict[str, tuple[int, ...]]) -> None:
        self._inner, self._shapes = inner, shapes

    def info(self, name: str) -> TensorInfo:
        info: TensorInfo = self._inner.info(name)
        shape = self._shapes.get(name)
        return info if shape is None else TensorInfo(shape, info.dtype)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


def aligner_for(
    config: MergeConfig,
    models: Mapping[ModelRef, InputModel],
    groups: Sequence[Sequence[InputSource]],
) -> Aligner | None:
    """The aligner of ``config``'s merge over the models of ``groups`` (each slice's sources),
    or None when its tokenizer settings need no alignment (no ``tokenizer:``, or ``base`` / a
    model whose vocabulary every model shares)."""
    refs = list(dict.fromkeys(s.model for g in groups for s in g))
    base = config.base_model
    members = ([base] if base is not None and base in refs else []) + [r for r in refs if r != base]
    spec = config.tokenizer
    if spec is None or not members:
        return None
    out = models[spec.source] if isinstance(spec.source, ModelRef) else None
    if out is None:
        out = models[config.base_model or members[0]]
    if not _needs_alignment(spec, [models[r] for r in members], out):
        return None
    return Aligner(config, models, members)
