"""Wall time and peak resident memory of a command, measured from outside as a subprocess.

``peak_rss`` is the larger of two readings, both in bytes:

* the highest sum of RSS over the command's whole process tree (the process and every descendant,
  e.g. a describer server or Dask workers), sampled every ``interval`` seconds with psutil;
* the kernel's own high-water mark of the command's process, which no sampling interval can miss, read
  through GNU ``time`` (``/usr/bin/time -f %M``) when it is installed. (Not ``wait4`` from here: a child
  inherits the high-water mark of the memory it was forked from, i.e. this process's.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MB = 2**20


@dataclass(frozen=True)
class Measured:
    """One measured run: ``seconds`` (wall), ``peak_rss`` (bytes), exit status and output tails."""

    seconds: float
    peak_rss: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def peak_mb(self) -> float:
        return self.peak_rss / MB

    def check(self, what: str = "command") -> Measured:
        """``self``, or a ``RuntimeError`` with the output's tail when the command failed."""
        if self.returncode != 0:
            raise RuntimeError(f"{what} failed ({self.returncode}):\n{self.stdout[-3000:]}\n{self.stderr[-3000:]}")
        return self


def tree_rss(pid: int) -> int:
    """Sum of RSS (bytes) over process ``pid`` and all its descendants; 0 when it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_measured(
    cmd: Sequence[str],
    *,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float | None = None,
    interval: float = 0.05,
) -> Measured:
    """Run ``cmd`` to completion and measure it (see the module docstring).

    Raises:
        subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds (the process tree is killed).
    """
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r", suffix=".maxrss") as maxrss_file:
        argv = [gnu_time, "-f", "%M", "-o", maxrss_file.name, *cmd] if gnu_time else list(cmd)
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=err,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, text=True,
        )
        if stdin is not None and proc.stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.close()
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss(proc.pid))
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                kill_tree(proc.pid)
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                done.set()
                raise subprocess.TimeoutExpired(list(cmd), timeout or 0)
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = maxrss_file.read().strip().splitlines()
        maxrss = int(text[-1]) * 1024 if text and text[-1].isdigit() else 0  # GNU time's %M is in kB
        return Measured(seconds, max(peak, maxrss), proc.returncode, out.read(), err.read())


def kill_tree(pid: int) -> None:
    """Kill process ``pid`` and all its descendants (by PID)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        for p in [*parent.children(recursive=True), parent]:
            p.kill()
    except psutil.Error:
        pass
