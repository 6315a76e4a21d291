"""Local services: a free loopback port, and stopping a process that ignores SIGTERM."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from pipeline.loopback import free_port, stop_process


def test_free_port_can_be_bound_on_loopback() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_stop_process_kills_what_ignores_sigterm() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    start = time.monotonic()
    stop_process(proc, timeout=1.0)
    assert proc.returncode == -9 and time.monotonic() - start < 10
    proc.stdout.close()
    stop_process(proc)  # an exited process: nothing to do


def test_stop_process_terminates_politely() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_process(proc)
    assert proc.returncode == -15
