"""Benchmark Alloy against mergekit: wall time and peak RSS per merge method.

Usage: run.py [--scale 7b|full|small] [--methods linear,ties,...] [--repeat N]
              [--tools alloy,mergekit] [--cache auto|cold|warm] [--floor]

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
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor import Floor, cache_control, drop_caches, measure_floor, process_io
from make_checkpoints import SCALES, check_free_disk, ensure_checkpoints, model_bytes

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
CONFIG_DIR = BENCH_DIR / "configs"
WORK_DIR = BENCH_DIR / "work"
RESULTS_DIR = BENCH_DIR / "results"
BIN_DIR = Path(sys.executable).parent  # the venv's bin/, not resolved through the symlink

METHODS = ("linear", "slerp", "task_arithmetic", "ties", "dare_ties", "tsv", "iso_c", "iso_cts")
TOOLS = ("alloy", "mergekit")
ALLOY_ONLY = frozenset({"tsv", "iso_c", "iso_cts"})  # no mergekit counterpart
REFERENCE_METHOD = "ties"  # what the Alloy-only methods are timed against
RANDOM_METHODS = frozenset({"dare_ties"})  # outputs differ by design; not compared
PLACEHOLDERS = ("base", "ft1", "ft2")
SAMPLED_TENSORS = (
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
    "model.norm.weight",
    "lm_head.weight",
)
# Alloy / mergekit ratios the project aims for.
RSS_TARGET = 0.4
TIME_TARGETS = {"linear": 0.5, "slerp": 0.5, "task_arithmetic": 0.5, "ties": 0.2, "dare_ties": 0.2}
# At the 7b scale: Alloy's peak RSS in absolute terms, and wall time against the I/O floor.
RSS_LIMIT_7B = 2 * 1024**3
FLOOR_TARGETS = {"linear": 1.3, "ties": 1.3}
LOG_TAIL_CHARS = 2000
GIB = 1024**3


# ---------------------------------------------------------------- measurement


class TreeRssPoller(threading.Thread):
    """Samples the summed RSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int, interval: float, max_rss: int | None = None) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.max_rss = max_rss  # kill the tree above this summed RSS (a shared machine)
        self.killed_at: int | None = None
        self.peak_bytes = 0  # summed over the tree, sampled
        self.hwm: dict[int, int] = {}  # per process: its own high-water mark (VmHWM)
        self.io: dict[int, tuple[int, int]] = {}  # per process: (read_bytes, rchar), last seen
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            total, marks = tree_rss(self.root)
            self.peak_bytes = max(self.peak_bytes, total)
            if self.max_rss is not None and total > self.max_rss and self.killed_at is None:
                self.killed_at = total
                kill_tree(self.root)
            for pid, hwm in marks.items():
                self.hwm[pid] = max(self.hwm.get(pid, 0), hwm)
                self.sample_io(pid)
            self.samples += 1
            self._stop_event.wait(self.interval)

    def sample_io(self, pid: int) -> None:
        if (io := process_io(pid)) is not None:
            self.io[pid] = io

    @property
    def read_bytes(self) -> tuple[int, int]:
        """(read_bytes, rchar) summed over every process of the tree seen."""
        return sum(r for r, _ in self.io.values()), sum(c for _, c in self.io.values())

    @property
    def peak_hwm_bytes(self) -> int:
        return max(self.hwm.values(), default=0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def kill_tree(root: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        for proc in [*root.children(recursive=True), root]:
            with contextlib.suppress(psutil.Error):
                proc.kill()


def tree_rss(root: psutil.Process) -> tuple[int, dict[int, int]]:
    """Sum of RSS over root and its live descendants (vanished processes count as 0), and each
    one's VmHWM."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, {}
    total = 0
    marks: dict[int, int] = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    marks[proc.pid] = int(line.split()[1]) * 1024  # kB
    return total, marks


@dataclass
class Measurement:
    returncode: int
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    ru_maxrss_bytes: int  # not used: inherits the harness's RSS at fork (module docstring)
    tree_peak_rss_bytes: int
    hwm_peak_bytes: int
    rss_samples: int
    read_bytes: int  # from storage (/proc/PID/io read_bytes, the tree)
    rchar: int  # through read calls, page-cache hits included
    killed_at_rss_bytes: int | None  # set when --max-rss stopped the run

    @property
    def peak_rss_bytes(self) -> int:
        return max(self.hwm_peak_bytes, self.tree_peak_rss_bytes)


def measure(
    cmd: list[str],
    log_path: Path,
    env: dict[str, str],
    interval: float,
    max_rss: int | None = None,
) -> Measurement:
    """Run cmd to completion (output to log_path); time it and track its peak memory."""
    with log_path.open("wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        poller = TreeRssPoller(proc.pid, interval, max_rss)
        poller.start()
        # Wait for exit without reaping, so the poller never sees a recycled pid.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - start
        poller.stop()
        poller.sample_io(proc.pid)  # the exited, unreaped root: its final counts
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Measurement(
        returncode=proc.returncode,
        wall_s=wall,
        cpu_user_s=usage.ru_utime,
        cpu_sys_s=usage.ru_stime,
        ru_maxrss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
        tree_peak_rss_bytes=poller.peak_bytes,
        hwm_peak_bytes=poller.peak_hwm_bytes,
        rss_samples=poller.samples,
        read_bytes=poller.read_bytes[0],
        rchar=poller.read_bytes[1],
        killed_at_rss_bytes=poller.killed_at,
    )


# ---------------------------------------------------------------- tools and configs


def tool_command(tool: str, config: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """The command line of one merge. mergekit keeps all its defaults (CPU, 5B-param shards)."""
    if tool == "alloy":
        return [str(args.alloy_bin), "merge", str(config), str(out), "--force"]
    return [str(args.mergekit_bin), str(config), str(out)]


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU only, for both tools
    return env


def render_config(method: str, models: dict[str, Path], dest_dir: Path) -> Path:
    """Copy bench/configs/<method>.yml with {base}/{ft1}/{ft2} replaced by model paths."""
    text = (CONFIG_DIR / f"{method}.yml").read_text()
    for name in PLACEHOLDERS:
        text = text.replace("{" + name + "}", str(models[name]))
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{method}.yml"
    dest.write_text(text)
    return dest


def warm_page_cache(models: dict[str, Path]) -> None:
    """Read every input file once so that the first run does not pay for a cold cache."""
    for model_dir in models.values():
        for path in sorted(model_dir.iterdir()):
            with path.open("rb") as f:
                while f.read(64 * 1024 * 1024):
                    pass


# ---------------------------------------------------------------- output comparison


def tensor_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, from the index if there is one."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: model_dir / fname for name, fname in weight_map.items()}
    files: dict[str, Path] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            files.update(dict.fromkeys(f.keys(), path))
    return files


def load_tensor(path: Path, name: str) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as f:
        tensor: torch.Tensor = f.get_tensor(name)
    return tensor


def relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the worst elementwise error, relative to the tensor's scale."""
    a32, b32 = a.float(), b.float()
    scale = b32.abs().max().item() or 1.0
    return (a32 - b32).abs().max().item() / scale


@dataclass
class Comparison:
    """Sampled tensors of Alloy's output against mergekit's (the reference)."""

    max_rel_diff: float | None
    per_tensor: dict[str, float]
    same_tensor_names: bool
    problems: list[str]


@dataclass
class Samples:
    """What the comparison needs of one output, kept in memory once the output is deleted:
    every tensor name, and the sampled tensors."""

    names: set[str]
    tensors: dict[str, torch.Tensor]


def read_samples(out_dir: Path) -> Samples:
    files = tensor_files(out_dir)
    tensors = {n: load_tensor(files[n], n) for n in SAMPLED_TENSORS if n in files}
    return Samples(set(files), tensors)


def compare_outputs(alloy: Samples, mergekit: Samples) -> Comparison:
    ours, theirs = alloy.names, mergekit.names
    per_tensor: dict[str, float] = {}
    problems: list[str] = []
    for name in SAMPLED_TENSORS:
        if name not in alloy.tensors or name not in mergekit.tensors:
            problems.append(f"{name} missing from {'alloy' if name not in ours else 'mergekit'}")
            continue
        a, b = alloy.tensors[name], mergekit.tensors[name]
        if a.shape != b.shape:
            problems.append(f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
            continue
        if a.dtype != b.dtype:
            problems.append(f"{name}: dtype {a.dtype} vs {b.dtype}")
        per_tensor[name] = relative_diff(a, b)
    if ours != theirs:
        problems.append(f"tensor names differ: {len(ours ^ theirs)} not in both")
    return Comparison(
        max_rel_diff=max(per_tensor.values()) if per_tensor else None,
        per_tensor=per_tensor,
        same_tensor_names=ours == theirs,
        problems=problems,
    )


# ---------------------------------------------------------------- one round


@dataclass
class RunRecord:
    method: str
    tool: str
    round: int
    command: list[str]
    ok: bool
    error: str | None = None
    loadavg_at_start: list[float] = field(default_factory=list)
    cache: str = "warm"  # "cold": the page cache was dropped just before the run
    measurement: dict[str, float | int] | None = None
    peak_rss_bytes: int | None = None


def log_tail(path: Path) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return text[-LOG_TAIL_CHARS:]


def has_safetensors(out: Path) -> bool:
    return out.is_dir() and any(out.glob("*.safetensors"))


def run_tool(
    tool: str, method: str, round_no: int, config: Path, out: Path, args: argparse.Namespace
) -> RunRecord:
    """One merge by one tool into a fresh directory."""
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = tool_command(tool, config, out, args)
    log_path = WORK_DIR / "logs" / args.scale / f"{method}-{tool}-{round_no}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cold = args.cache == "cold"
    if cold:
        drop_caches()
    record = RunRecord(
        method,
        tool,
        round_no,
        cmd,
        ok=False,
        loadavg_at_start=list(os.getloadavg()),
        cache="cold" if cold else "warm",
    )
    try:
        max_rss = int(args.max_rss * GIB) if args.max_rss else None
        m = measure(cmd, log_path, tool_env(), args.poll_interval, max_rss)
    except OSError as exc:  # e.g. the alloy command is not installed yet
        record.error = f"could not start {cmd[0]}: {exc}"
        return record
    record.measurement = {**asdict(m)}
    record.peak_rss_bytes = m.peak_rss_bytes
    if m.killed_at_rss_bytes is not None:
        record.error = (
            f"killed by the harness: the tree's RSS reached {m.killed_at_rss_bytes / GIB:.1f} "
            f"GiB, above --max-rss {args.max_rss} GiB"
        )
    elif m.returncode != 0:
        tail = log_tail(log_path)
        last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "")
        record.error = f"exit code {m.returncode}: {last.strip()}\nlog tail:\n{tail}"
    elif not has_safetensors(out):
        record.error = f"exit code 0 but no .safetensors in {out}"
    else:
        record.ok = True
    return record


def describe(record: RunRecord) -> str:
    if not record.ok:
        first_line = (record.error or "").splitlines()[0] if record.error else "?"
        return f"{record.tool:8s} FAILED ({first_line})"
    assert record.peak_rss_bytes is not None and record.measurement is not None
    wall = record.measurement["wall_s"]
    read = record.measurement["read_bytes"] / 1e9
    return (
        f"{record.tool:8s} {wall:7.1f} s  {record.peak_rss_bytes / GIB:6.2f} GiB  "
        f"read {read:5.1f} GB ({record.cache})"
    )


def method_tools(method: str, tools: list[str]) -> list[str]:
    """The tools that can run a method: Alloy alone for the Alloy-only methods."""
    return [t for t in tools if t == "alloy"] if method in ALLOY_ONLY else list(tools)


def run_round(
    method: str, round_no: int, config: Path, args: argparse.Namespace
) -> tuple[list[RunRecord], Comparison | None]:
    """Every tool once on one method, then the comparison, then cleanup."""
    tools = method_tools(method, args.tools)
    outs = {tool: WORK_DIR / "out" / args.scale / f"{method}-{tool}" for tool in tools}
    records = []
    samples: dict[str, Samples] = {}
    for tool in tools:
        record = run_tool(tool, method, round_no, config, outs[tool], args)
        print(f"  {method} round {round_no}: {describe(record)}", flush=True)
        records.append(record)
        if record.ok and method not in RANDOM_METHODS:
            samples[tool] = read_samples(outs[tool])
        if not args.keep_outputs:  # before the next run: the disk holds one output
            shutil.rmtree(outs[tool], ignore_errors=True)
    comparison = None
    if {"alloy", "mergekit"} <= set(samples):
        comparison = compare_outputs(samples["alloy"], samples["mergekit"])
        print(f"  {method} round {round_no}: max rel diff {comparison.max_rel_diff}", flush=True)
    return records, comparison


# ---------------------------------------------------------------- summary


@dataclass
class ToolSummary:
    runs_ok: int
    runs_failed: int
    wall_s_median: float | None
    peak_rss_bytes_median: float | None
    read_bytes_median: float | None
    error: str | None


@dataclass
class MethodSummary:
    tools: dict[str, ToolSummary]
    time_ratio: float | None
    rss_ratio: float | None
    compared: bool
    max_rel_diff: float | None
    comparisons: list[Comparison]
    floor_s: float | None = None  # read the method's inputs once + write one output
    floor_ratio: dict[str, float | None] = field(default_factory=dict)  # tool: wall / floor

    @property
    def problems(self) -> list[str]:
        return sorted({p for c in self.comparisons for p in c.problems})


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize_tool(records: list[RunRecord]) -> ToolSummary:
    ok = [r for r in records if r.ok and r.measurement is not None]
    failed = [r for r in records if not r.ok]
    return ToolSummary(
        runs_ok=len(ok),
        runs_failed=len(failed),
        wall_s_median=median_or_none([float(r.measurement["wall_s"]) for r in ok if r.measurement]),
        peak_rss_bytes_median=median_or_none([float(r.peak_rss_bytes or 0) for r in ok]),
        read_bytes_median=median_or_none(
            [float(r.measurement["read_bytes"]) for r in ok if r.measurement]
        ),
        error=failed[0].error if failed else None,
    )


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize_method(
    method: str,
    records: list[RunRecord],
    comparisons: list[Comparison],
    tools: list[str],
    floor_s: float | None = None,
) -> MethodSummary:
    by_tool = {
        t: summarize_tool([r for r in records if r.tool == t]) for t in method_tools(method, tools)
    }
    alloy, mergekit = by_tool.get("alloy"), by_tool.get("mergekit")
    diffs = [c.max_rel_diff for c in comparisons if c.max_rel_diff is not None]
    return MethodSummary(
        tools=by_tool,
        time_ratio=ratio(
            alloy.wall_s_median if alloy else None, mergekit.wall_s_median if mergekit else None
        ),
        rss_ratio=ratio(
            alloy.peak_rss_bytes_median if alloy else None,
            mergekit.peak_rss_bytes_median if mergekit else None,
        ),
        compared=method not in RANDOM_METHODS and method not in ALLOY_ONLY,
        max_rel_diff=max(diffs) if diffs else None,
        comparisons=comparisons,
        floor_s=floor_s,
        floor_ratio={t: ratio(s.wall_s_median, floor_s) for t, s in by_tool.items()},
    )


# ---------------------------------------------------------------- reporting


def fmt_time(s: ToolSummary | None) -> str:
    if s is None:
        return "not run"
    return f"{s.wall_s_median:.1f} s" if s.wall_s_median is not None else "failed"


def fmt_rss(s: ToolSummary | None) -> str:
    if s is None:
        return "not run"
    value = s.peak_rss_bytes_median
    return f"{value / GIB:.2f} GiB" if value is not None else "failed"


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def fmt_diff(method: str, s: MethodSummary) -> str:
    if method in ALLOY_ONLY:
        return "n/a (Alloy only)"
    if not s.compared:
        return "skipped (random)"
    text = f"{s.max_rel_diff:.2e}" if s.max_rel_diff is not None else "-"
    return f"{text} ({len(s.problems)} problems)" if s.problems else text


def markdown_table(summary: dict[str, MethodSummary]) -> str:
    lines = [
        "| method | alloy time | mergekit time | time ratio | alloy peak RSS "
        "| mergekit peak RSS | RSS ratio | max rel diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        alloy, mk = s.tools.get("alloy"), s.tools.get("mergekit")
        mk_time = "n/a" if method in ALLOY_ONLY else fmt_time(mk)
        mk_rss = "n/a" if method in ALLOY_ONLY else fmt_rss(mk)
        lines.append(
            f"| {method} | {fmt_time(alloy)} | {mk_time} | {fmt_ratio(s.time_ratio)} "
            f"| {fmt_rss(alloy)} | {mk_rss} | {fmt_ratio(s.rss_ratio)} | {fmt_diff(method, s)} |"
        )
    return "\n".join(lines)


def alloy_only_table(summary: dict[str, MethodSummary]) -> str | None:
    """The Alloy-only methods against Alloy's ties on the same models (None if none ran)."""
    methods = [m for m in summary if m in ALLOY_ONLY]
    if not methods:
        return None
    ref = summary.get(REFERENCE_METHOD)
    ref_alloy = ref.tools.get("alloy") if ref else None
    ref_time = ref_alloy.wall_s_median if ref_alloy else None
    ref_rss = ref_alloy.peak_rss_bytes_median if ref_alloy else None
    lines = [
        f"| method | alloy time | {REFERENCE_METHOD} time | time vs {REFERENCE_METHOD} "
        f"| alloy peak RSS | {REFERENCE_METHOD} peak RSS | RSS vs {REFERENCE_METHOD} |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        alloy = summary[method].tools.get("alloy")
        time = alloy.wall_s_median if alloy else None
        rss = alloy.peak_rss_bytes_median if alloy else None
        lines.append(
            f"| {method} | {fmt_time(alloy)} | {fmt_time(ref_alloy)} "
            f"| {fmt_ratio(ratio(time, ref_time))} | {fmt_rss(alloy)} | {fmt_rss(ref_alloy)} "
            f"| {fmt_ratio(ratio(rss, ref_rss))} |"
        )
    return "\n".join(lines)


def fmt_bytes(value: float | None) -> str:
    return f"{value / 1e9:.1f} GB" if value is not None else "-"


def io_table(summary: dict[str, MethodSummary], cache: str) -> str:
    """Wall time against the I/O floor, and the bytes each tool read from storage."""
    lines = [
        "| method | cache | floor | alloy / floor | mergekit / floor | alloy read "
        "| mergekit read |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        alloy, mk = s.tools.get("alloy"), s.tools.get("mergekit")
        floor = f"{s.floor_s:.1f} s" if s.floor_s is not None else "not measured"
        lines.append(
            f"| {method} | {cache} | {floor} | {fmt_ratio(s.floor_ratio.get('alloy'))} "
            f"| {fmt_ratio(s.floor_ratio.get('mergekit'))} "
            f"| {fmt_bytes(alloy.read_bytes_median if alloy else None)} "
            f"| {fmt_bytes(mk.read_bytes_median if mk else None)} |"
        )
    return "\n".join(lines)


def targets_7b_table(summary: dict[str, MethodSummary]) -> str:
    """The 7b targets: Alloy's peak RSS in absolute terms, its wall time against the floor."""
    lines = [
        "| method | alloy peak RSS | < 2 GiB | alloy / floor | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        alloy = s.tools.get("alloy")
        rss = alloy.peak_rss_bytes_median if alloy else None
        rss_ok = "not measured" if rss is None else "pass" if rss < RSS_LIMIT_7B else "FAIL"
        target = FLOOR_TARGETS.get(method)
        floor_ratio = s.floor_ratio.get("alloy")
        lines.append(
            f"| {method} | {fmt_rss(alloy)} | {rss_ok} | {fmt_ratio(floor_ratio)} "
            f"| {f'<= {target}x' if target else '-'} "
            f"| {verdict(floor_ratio, target) if target else '-'} |"
        )
    return "\n".join(lines)


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return "pass" if value <= target else "FAIL"


def targets_table(summary: dict[str, MethodSummary]) -> str:
    lines = ["| method | time target | time | RSS target | RSS |", "|---|---|---|---|---|"]
    for method, s in summary.items():
        if method not in TIME_TARGETS:
            continue  # Alloy-only methods: no mergekit to compare with
        t_target = TIME_TARGETS[method]
        lines.append(
            f"| {method} | <= {t_target}x | {verdict(s.time_ratio, t_target)} "
            f"| <= {RSS_TARGET}x | {verdict(s.rss_ratio, RSS_TARGET)} |"
        )
    return "\n".join(lines)


def failures(summary: dict[str, MethodSummary]) -> str:
    """One line per tool and method that failed, with the first line of the error."""
    lines = []
    for method, s in summary.items():
        for tool, t in s.tools.items():
            if t.error:
                lines.append(f"- {method} / {tool}: {t.error.splitlines()[0]}")
    return "\n".join(lines)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state() -> dict[str, object]:
    def git(*cmd: str) -> str:
        result = subprocess.run(
            ["git", *cmd], cwd=REPO_DIR, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def environment() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "versions": {
            "torch": torch.__version__,
            "safetensors": package_version("safetensors"),
            "mergekit": package_version("mergekit"),
            "alloy-merge": package_version("alloy-merge"),
        },
        "git": git_state(),
    }


def write_results(payload: dict[str, object]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{payload['timestamp']}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


# ---------------------------------------------------------------- command line


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
    for round_no in range(1, args.repeat + 1):
        round_records, comparison = run_round(method, round_no, config, args)
        records += round_records
        if comparison is not None:
            comparisons.append(comparison)
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
    if args.floor:
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
