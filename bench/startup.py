"""Start-up times of the `alloy` command: medians of repeated runs, for one or more source trees.

Usage: startup.py [--repeat 7] [--tree NAME=SRC ...] [--tiny DIR]

Each tree is a directory holding the `alloy` package (a checkout's src/); the commands run as
``python -m alloy ...`` with PYTHONPATH=SRC, in rounds that alternate the trees so that drift in
the machine's load affects them alike. One untimed run of each command and tree comes first (it
writes the bytecode and numba caches). The commands: ``--version``, ``--help``, ``methods``,
and a merge of the tiny example models (examples/make_tiny_models.py, written into DIR if
missing) with examples/linear.yml. For each command and tree, one more run with
``-X importtime`` records which heavy modules it imports. Prints a markdown table; writes
bench/results/startup-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
HEAVY = ("torch", "numba", "matplotlib", "matplotlib.pyplot", "transformers", "scipy")
COMMANDS: dict[str, list[str]] = {
    "--version": ["--version"],
    "--help": ["--help"],
    "methods": ["methods"],
    "tiny merge": ["merge", str(REPO_DIR / "examples" / "linear.yml"), "{out}", "--force", "-q"],
}


def command_line(name: str, out: Path, importtime: bool = False) -> list[str]:
    flags = ["-X", "importtime"] if importtime else []
    args = [a.replace("{out}", str(out)) for a in COMMANDS[name]]
    return [sys.executable, *flags, "-m", "alloy", *args]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(cmd: list[str], src: Path, cwd: Path) -> tuple[float, float, str]:
    """Wall time and CPU time (user + system) of one run, and its stderr; raises if the
    command fails. On a loaded machine the CPU time moves much less than the wall time."""
    env = {**os.environ, "PYTHONPATH": str(src), "CUDA_VISIBLE_DEVICES": ""}
    cpu = children_cpu()
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} (PYTHONPATH={src}) failed:\n{result.stderr[-2000:]}")
    return wall, children_cpu() - cpu, result.stderr


def heavy_imports(importtime_log: str) -> list[str]:
    """The top-level HEAVY packages named in an ``-X importtime`` log."""
    found = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            if name in HEAVY:
                found.add(name)
    return sorted(found)


def ensure_tiny(parent: Path) -> None:
    if (parent / "tiny" / "chat").is_dir() and (parent / "tiny" / "code").is_dir():
        return
    subprocess.run(
        [sys.executable, str(REPO_DIR / "examples" / "make_tiny_models.py"), str(parent / "tiny")],
        env={**os.environ, "PYTHONPATH": str(REPO_DIR / "src")},
        check=True,
    )


def parse_tree(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not (Path(path) / "alloy" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"expected NAME=SRC with SRC/alloy/__init__.py: {value}")
    return name, Path(path).resolve()


def git(*cmd: str) -> str:
    result = subprocess.run(["git", *cmd], cwd=REPO_DIR, capture_output=True, text=True)
    return result.stdout.strip()


def measure(args: argparse.Namespace, out: Path) -> dict[str, dict[str, dict[str, object]]]:
    """{command: {tree: {"walls": [...], "cpus": [...], "median_s": ..., "median_cpu_s": ...,
    "heavy": [...]}}}."""
    trees: dict[str, Path] = dict(args.tree)
    results = {c: {t: {"walls": [], "cpus": [], "heavy": []} for t in trees} for c in COMMANDS}
    for name in COMMANDS:
        for tree, src in trees.items():
            run_once(command_line(name, out), src, args.tiny)  # untimed: caches
            _, _, log = run_once(command_line(name, out, importtime=True), src, args.tiny)
            results[name][tree]["heavy"] = heavy_imports(log)
    for _ in range(args.repeat):
        for name in COMMANDS:
            for tree, src in trees.items():
                wall, cpu, _ = run_once(command_line(name, out), src, args.tiny)
                walls, cpus = results[name][tree]["walls"], results[name][tree]["cpus"]
                assert isinstance(walls, list) and isinstance(cpus, list)
                walls.append(wall)
                cpus.append(cpu)
    for per_tree in results.values():
        for entry in per_tree.values():
            walls, cpus = entry["walls"], entry["cpus"]
            assert isinstance(walls, list) and isinstance(cpus, list)
            entry["median_s"] = statistics.median(walls)
            entry["median_cpu_s"] = statistics.median(cpus)
    return results


def table(results: dict[str, dict[str, dict[str, object]]], trees: list[str]) -> str:
    head = " | ".join(f"{t} median | {t} CPU | {t} imports" for t in trees)
    lines = [f"| command | {head} |", "|---|" + "---|---|---|" * len(trees)]
    for name, per_tree in results.items():
        cells = []
        for t in trees:
            heavy = per_tree[t]["heavy"]
            assert isinstance(heavy, list)
            cells.append(
                f"{per_tree[t]['median_s']:.2f} s | {per_tree[t]['median_cpu_s']:.2f} s "
                f"| {', '.join(heavy) or 'none heavy'}"
            )
        lines.append(f"| `alloy {name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--tree", type=parse_tree, action="append", help="NAME=SRC (default: this=src/)"
    )
    parser.add_argument("--tiny", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.tree = args.tree or [("this", REPO_DIR / "src")]
    args.tiny = args.tiny.resolve()
    ensure_tiny(args.tiny)
    out = Path(tempfile.mkdtemp(prefix="alloy-startup-"))
    load_before = os.getloadavg()
    try:
        results = measure(args, out / "merged")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    payload = {
        "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
        "trees": {name: str(src) for name, src in args.tree},
        "repeat": args.repeat,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "results": results,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"startup-{payload['timestamp']}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(table(results, [name for name, _ in args.tree]))
    print(f"\nload average before {load_before}, after {payload['loadavg_after']}; {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
