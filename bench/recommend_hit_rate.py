"""How often `alloy recommend` is right, on finished `alloy demo` runs (one per seed).

For each demo directory and family (full fine-tunes, LoRA adapters) it takes the demo table's
retentions (report.json: each fixed method's `keeps persona` / `keeps tools` on the whole
held-out sets), runs the recommendation rules of this checkout on the family's models, merges
the recommended config and measures it the demo's way (held-out perplexity, the demo's
evaluation options) unless it is one of the demo's fixed configs (then the demo's numbers
are its numbers: the same config gives the same bytes), and compares the recommended merge's
smallest retention with the best of all methods'. It also measures every merge's distance
from the base (relative L2 over every floating-point tensor).

    alloy demo --out /tmp/demo-s1 --seed 1          # once per seed (about 2 min alone)
    python bench/recommend_hit_rate.py /tmp/demo-s* --json hit_rate.json --md hit_rate.md

The comparison with `alloy search`'s best is a separate run of `alloy search` per family, as
in docs/search.md (its trials.json holds the recommended config's test-split retention beside
the best trial's: the search measures the recommendation too).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

SKILLS = ("persona", "tools")
FAMILIES = ("full", "lora")


def family_refs(demo: Path, family: str) -> tuple[str, str, str]:
    base = str(demo / "models" / "base")
    if family == "full":
        return base, str(demo / "models/persona-full"), str(demo / "models/tools-full")
    ad = demo / "adapters"
    return base, f"{base}+{ad / 'persona-lora'}", f"{base}+{ad / 'tools-lora'}"


def _canon(cfg: dict[str, Any]) -> str:
    keep = {k: cfg.get(k) for k in ("merge_method", "base_model", "models", "parameters")}
    return json.dumps(keep, sort_keys=True)


def distance(path: Path, base: dict[str, Any]) -> float:
    """Relative L2 distance of the model in ``path`` from ``base`` over the float tensors."""
    from safetensors.torch import load_file

    sd: dict[str, Any] = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(f))
    num = den = 0.0
    for k, b in base.items():
        if k in sd and b.is_floating_point():
            d = sd[k].double() - b.double()
            num += float((d * d).sum())
            den += float((b.double() ** 2).sum())
    return math.sqrt(num / den)


def measure(path: Path, demo: Path) -> dict[str, float]:
    """Held-out perplexity of each set, as the demo measures it."""
    from alloy.evaluate.models import EvalOptions
    from alloy.evaluate.run import load_sets, measure_model

    data = [f"{s}={demo / 'data/eval' / (s + '.jsonl')}" for s in (*SKILLS, "general")]
    sets = load_sets(data, [])
    options = EvalOptions(batch_size=32, max_new_tokens=48)
    m = measure_model(str(path), path, sets, options)
    return {k[0]: v for k, v in m.values.items() if k[1] == "perplexity"}


def retention(base: float, merged: float, spec: float) -> float | None:
    gain = base - spec
    return (base - merged) / gain if gain > 0 else None


def recommended(demo: Path, family: str) -> tuple[str | None, dict[str, Any] | None, Any]:
    from alloy.analysis.analyze import analyze
    from alloy.analysis.recommend import from_analysis

    base, persona, tools = family_refs(demo, family)
    rec = from_analysis(analyze([persona, tools], base), dtype="float32")
    return rec.method, rec.config, rec


def one_family(demo: Path, report: dict[str, Any], family: str, work: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    from alloy.api import merge
    from alloy.demo.merges import merge_configs

    models = {m["label"]: m for m in report["models"]}
    base_vals = models["base"]["values"]
    specs = {s: models[f"{s}-{family}"]["values"] for s in SKILLS}
    base_sd = load_file(demo / "models/base/model.safetensors")
    sources = {s: distance(Path(models[f"{s}-{family}"]["path"]), base_sd) for s in SKILLS}
    fixed: dict[str, dict[str, Any]] = {}
    for m in models.values():
        if m["role"] == "merge" and m["family"] == family and not m.get("recommended"):
            ret = m["retention"]
            fixed[m["name"]] = {
                "retention": ret,
                "min": min(ret[s] for s in SKILLS),
                "distance": distance(Path(m["path"]), base_sd),
            }
    ran = [m for m in models.values() if m.get("recommended") and m["family"] == family]
    if ran:  # what the rules of the Alloy that ran the demo recommended
        ret = ran[0]["retention"]
        fixed_at_run = {"method": ran[0]["name"], "retention": ret}
        fixed_at_run["min"] = min(ret[s] for s in SKILLS)
    method, config, rec = recommended(demo, family)
    row: dict[str, Any] = {"family": family, "sources_distance": sources, "fixed": fixed}
    row["demo_recommended"] = fixed_at_run if ran else None
    row["rationale"] = rec.rationale
    row["predicted_distance"] = (rec.distance or {}).get("predicted")
    if config is None:
        row["recommended"] = None
        return row
    same = [
        n
        for n, c in merge_configs(*family_refs(demo, family)).items()
        if _canon(c) == _canon(config)
    ]
    if same:
        rec_row = {**fixed[same[0]], "same_as": same[0]}
    else:
        out = work / f"{family}-recommended"
        merge(config, out, random_seed=int(report["info"]["seed"]), force=True)
        vals = measure(out, demo)
        ret = {
            s: retention(base_vals[f"{s}/perplexity"], vals[s], specs[s][f"{s}/perplexity"])
            for s in SKILLS
        }
        rep = json.loads((out / "report.json").read_text())
        rec_row = {
            "retention": ret,
            "min": min(v for v in ret.values() if v is not None),
            "distance": distance(out, base_sd),
            "report_distance": (rep.get("distance") or {}).get("merged", {}).get("overall"),
        }
    rec_row.update(method=method, config=config)
    row["recommended"] = rec_row
    best_name = max(fixed, key=lambda n: fixed[n]["min"])
    best = max(fixed[best_name]["min"], rec_row["min"])
    row["best"] = {
        "method": best_name if best == fixed[best_name]["min"] else "recommended",
        "min": best,
    }
    row["gap_points"] = 100 * (best - rec_row["min"])
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| seed | family | recommended | persona / tools | min | best method | its min | gap (points) | hit (<= 2) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rec = r["recommended"]
        if rec is None:
            continue
        ret = rec["retention"]
        best = r["best"]
        name = (
            best["method"] if best["method"] != "recommended" else rec["method"] + " (recommended)"
        )
        lines.append(
            f"| {r['seed']} | {r['family']} | {rec['method']} | {100 * ret['persona']:.1f}% / "
            f"{100 * ret['tools']:.1f}% | {100 * rec['min']:.1f}% | {name} | "
            f"{100 * best['min']:.1f}% | {r['gap_points']:.1f} | {'yes' if r['gap_points'] <= 2 else 'no'} |"
        )
    return "\n".join(lines)


def distance_markdown(rows: list[dict[str, Any]]) -> str:
    """Every merge's distance from the base, its ratio to the farthest specialist and its
    smallest retention."""
    lines = [
        "| seed | family | method | distance | / farthest specialist | min retention |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        far = max(r["sources_distance"].values())
        for name, f in sorted(r["fixed"].items(), key=lambda x: x[1]["distance"]):
            lines.append(
                f"| {r['seed']} | {r['family']} | {name} | {100 * f['distance']:.1f}% | "
                f"{f['distance'] / far:.2f} | {100 * f['min']:.1f}% |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demos", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="where the recommended merges go")
    args = ap.parse_args()
    rows = []
    for demo in args.demos:
        report = json.loads((demo / "report.json").read_text())
        seed = report["info"]["seed"]
        work = args.work or Path(tempfile.mkdtemp(prefix=f"hit-rate-s{seed}-"))
        for family in FAMILIES:
            row = one_family(demo, report, family, work / f"s{seed}")
            row["seed"] = seed
            rows.append(row)
            print(markdown([row]).splitlines()[-1], flush=True)
    text = markdown(rows) + "\n\n" + distance_markdown(rows)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
