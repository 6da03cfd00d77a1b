"""Running one command and measuring it: wall and CPU time, peak RSS of its process tree
(summed RSS and each process's VmHWM, polled), bytes read, and a kill above --max-rss."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from floor import process_io


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
