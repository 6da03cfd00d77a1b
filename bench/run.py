"""Benchmark Alloy against mergekit: wall time and peak RSS per merge method.

Usage: run.py [--scale 7b|full|small] [--methods linear,ties,...] [--repeat N]
              [--tools alloy,mergekit] [--cache auto|cold|warm] [--floor] [--floor-each]

For each method the tools run alternately (alloy, mergekit, alloy, mergekit, ...) so that
drift in the machine's load affects both. The SVD methods (tsv, iso_c, iso_cts) exist only in
Alloy: they run with Alloy alone and are reported against Alloy's ties on the same models. Each run is a subprocess writing into a fresh
directory under bench/work/out/; right after each run a few sampled tensors are read from its
output, which is then deleted (so the disk needs room for one output, checked first), and the
two tools' samples are compared.

With a cold cache (``--cache cold``; ``auto``, the default, means cold where this process may
drop the page cache, i.e. as root) the page cache is dropped before every run, so every run
reads its inputs from the disk. ``--floor`` (the default at the 7b scale) first measures the
floor (bench/floor.py): reading each input model once sequentially plus writing and syncing
one output of the model's size; each method's floor counts the models its config reads.
``--floor-each`` measures it again right before each round of each method instead and takes
the median per method: on a virtual disk whose host caches what was read recently, the floor
at the start of a run and the disk a method's rounds meet later can differ by 1.8x.
Bytes read are the tree's ``read_bytes`` (from storage) and ``rchar`` (through read calls,
cache hits included) in /proc/PID/io; a mapped file's pages count in ``read_bytes`` only. Results go to bench/results/<timestamp>.json and a markdown table
is printed.

Peak RSS is measured twice by a poller every ~50 ms: the summed RSS of the whole process tree,
and each process's own high-water mark (VmHWM in /proc/PID/status, exact between samples). The
larger counts. ru_maxrss from os.wait4 is recorded but not used: Linux starts a forked child's
ru_maxrss at the parent's RSS, so once this harness has grown (it loads outputs to compare
them) every tool's ru_maxrss would read at least the harness's size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from compare import Comparison
from floor import Floor, cache_control, measure_floor
from make_checkpoints import SCALES, check_free_disk, ensure_checkpoints, model_bytes
from record import environment, write_results
from rounds import RunRecord, render_config, run_round, warm_page_cache
from settings import (
    BIN_DIR,
    CONFIG_DIR,
    METHODS,
    PLACEHOLDERS,
    REFERENCE_METHOD,
    RSS_TARGET,
    TIME_TARGETS,
    TOOLS,
    WORK_DIR,
)
from summary import MethodSummary, summarize_method
from tables import (
    alloy_only_table,
    failures,
    io_table,
    markdown_table,
    targets_7b_table,
    targets_table,
)


def csv_choice(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type for a comma-separated subset of allowed (or 'all')."""

    def parse(value: str) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if items == ["all"]:
            return list(allowed)
        unknown = [v for v in items if v not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (got {value!r})")
        return items

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument(
        "--models",
        type=Path,
        help="directory with base/, ft1/, ft2/ (default bench/work/models, or "
        "bench/work/models-<scale> for the other scales); generated if missing",
    )
    parser.add_argument("--methods", type=csv_choice(METHODS), default=list(METHODS))
    parser.add_argument("--tools", type=csv_choice(TOOLS), default=list(TOOLS))
    parser.add_argument("--repeat", type=int, default=1, help="rounds per method")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="seconds")
    parser.add_argument("--alloy-bin", type=Path, default=BIN_DIR / "alloy")
    parser.add_argument("--mergekit-bin", type=Path, default=BIN_DIR / "mergekit-yaml")
    parser.add_argument("--keep-outputs", action="store_true", help="do not delete outputs")
    parser.add_argument("--no-warmup", action="store_true", help="skip reading inputs first")
    parser.add_argument(
        "--max-rss",
        type=float,
        default=None,
        help="GiB: kill a run whose tree's RSS passes this (protects a shared machine)",
    )
    parser.add_argument(
        "--cache",
        choices=("auto", "cold", "warm"),
        default="auto",
        help="cold: drop the page cache before every run (root); auto: cold where possible",
    )
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure the read+write floor first (default: at the 7b scale)",
    )
    parser.add_argument(
        "--floor-each",
        action="store_true",
        help="measure each method's floor again right before each of its rounds (the "
        "median is its floor): a virtual disk whose host caches recent reads moves the floor "
        "between the start of a run and a method's rounds",
    )
    args = parser.parse_args(argv)
    if args.models is None:
        args.models = WORK_DIR / ("models" if args.scale == "full" else f"models-{args.scale}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    why_not = cache_control()
    if args.cache == "cold" and why_not:
        parser.error(f"--cache cold: {why_not}")
    if args.cache == "auto":
        args.cache = "warm" if why_not else "cold"
    if args.floor is None:
        args.floor = args.scale == "7b"
    if args.floor_each:
        args.floor = True
    return args


def config_models(method: str) -> list[str]:
    """The placeholders (base, ft1, ft2) that bench/configs/<method>.yml reads."""
    text = (CONFIG_DIR / f"{method}.yml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return [name for name in PLACEHOLDERS if "{" + name + "}" in body]


def run_method(
    method: str, models: dict[str, Path], args: argparse.Namespace, floor: Floor | None
) -> tuple[list[RunRecord], MethodSummary]:
    """All rounds of one method."""
    config = render_config(method, models, WORK_DIR / "configs" / args.scale)
    records: list[RunRecord] = []
    comparisons: list[Comparison] = []
    floors: list[float] = []
    for round_no in range(1, args.repeat + 1):
        if args.floor_each:
            names = config_models(method)
            again = measure_floor(
                {n: models[n] for n in names},
                WORK_DIR / "out" / args.scale,
                model_bytes(SCALES[args.scale]),
                args.cache == "cold",
            )
            floors.append(again.for_models(names))
        round_records, comparison = run_round(method, round_no, config, args)
        records += round_records
        if comparison is not None:
            comparisons.append(comparison)
    if floors:
        floor_s: float | None = statistics.median(floors)
        print(
            f"  {method}: floor {floor_s:.1f} s (median of {', '.join(f'{f:.1f}' for f in floors)})"
        )
    else:
        floor_s = floor.for_models(config_models(method)) if floor else None
    return records, summarize_method(method, records, comparisons, args.tools, floor_s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    timestamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    models = ensure_checkpoints(args.models.resolve(), args.scale)
    out_bytes = model_bytes(SCALES[args.scale])
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    check_free_disk(WORK_DIR, out_bytes + out_bytes // 20, "one output (the runs, the floor)")
    load_at_start = list(os.getloadavg())
    if args.cache == "warm" and not args.no_warmup:
        warm_page_cache(models)
    floor = None
    if args.floor and not args.floor_each:
        read = {n for m in args.methods for n in config_models(m)}
        floor = measure_floor(
            {n: p for n, p in models.items() if n in read},
            WORK_DIR / "out" / args.scale,
            out_bytes,
            args.cache == "cold",
        )
    records: list[RunRecord] = []
    summary: dict[str, MethodSummary] = {}
    for method in args.methods:
        method_records, summary[method] = run_method(method, models, args, floor)
        records += method_records
    payload = {
        "timestamp": timestamp,
        "scale": args.scale,
        "repeat": args.repeat,
        "tools": args.tools,
        "models": {k: str(v) for k, v in models.items()},
        "cache": args.cache,
        "floor": asdict(floor) if floor else None,
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": list(os.getloadavg()),
        "environment": environment(),
        "targets": {"rss_ratio": RSS_TARGET, "time_ratio": TIME_TARGETS},
        "summary": {m: asdict(s) for m, s in summary.items()},
        "runs": [asdict(r) for r in records],
    }
    path = write_results(payload)
    print(f"\n{args.scale} scale, {args.repeat} round(s), medians\n\n{markdown_table(summary)}\n")
    if (svd := alloy_only_table(summary)) is not None:
        print(f"Alloy-only methods against Alloy's {REFERENCE_METHOD} on the same models:\n")
        print(f"{svd}\n")
    print(f"I/O ({args.cache} cache):\n\n{io_table(summary, args.cache)}\n")
    note = "" if args.scale == "full" else " (the targets are meant for the full scale)"
    print(f"targets against mergekit{note}:\n\n{targets_table(summary)}\n")
    if args.scale == "7b":
        print(f"7b targets:\n\n{targets_7b_table(summary)}\n")
    if failed := failures(summary):
        print(f"failures:\n{failed}\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
