"""One run of a tool (a merge into a fresh directory, measured) and one round: every tool
once on a method, the outputs compared, then deleted."""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from compare import Comparison, Samples, compare_outputs, read_samples
from floor import drop_caches
from measure import measure
from settings import (
    ALLOY_ONLY,
    CONFIG_DIR,
    GIB,
    LOG_TAIL_CHARS,
    PLACEHOLDERS,
    RANDOM_METHODS,
    WORK_DIR,
)


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
