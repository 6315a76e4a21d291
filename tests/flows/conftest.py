"""Fixtures of the flow tests: Prefect kept local, a test harness, a counting LMM proxy, a real Prefect stack.

Prefect never leaves the machine here: its home is a temporary folder, analytics are off, and every
server, worker and LMM endpoint listens on 127.0.0.1. Everything a fixture starts is stopped by PID in
its teardown, also when a test fails.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.loopback import free_port

# Before anything imports prefect: a home of our own, no analytics, no server from the environment.
_HOME = tempfile.mkdtemp(prefix="geopixeld-prefect-tests-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILE", None)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


# -- a counting, gating LMM proxy ---------------------------------------------------------------------


def request_key(body: bytes) -> str:
    """A request's identity: sha256 of its canonical JSON body."""
    return hashlib.sha256(json.dumps(json.loads(body), sort_keys=True).encode()).hexdigest()


class CountingProxy:
    """An HTTP proxy on 127.0.0.1 in front of an OpenAI-compatible server, recording every request.

    ``received`` lists the key of every chat request in arrival order, ``answered`` those whose answer
    was sent back. ``hold_when`` (a predicate checked per request) makes new requests wait, unanswered,
    until :meth:`release`, so a test can stop a run while the work that finished stays finished;
    :attr:`busy` counts the requests neither answered nor held.
    """

    def __init__(self, upstream: str, port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.received: list[str] = []
        self.answered: list[str] = []
        self.holding = 0
        self.hold_when: Callable[[], bool] = lambda: False
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
                pass

            def do_POST(self) -> None:  # noqa: N802 - base class name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = request_key(body)
                with proxy._lock:
                    proxy.received.append(key)
                    if proxy.hold_when():
                        proxy._open.clear()
                if not proxy._open.is_set():
                    with proxy._lock:
                        proxy.holding += 1
                    proxy._open.wait()
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body, headers={"Content-Type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(request, timeout=120) as r:
                        status, payload = r.status, r.read()
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, exc.read()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                except OSError:
                    return  # the client is gone (a killed run)
                with proxy._lock:
                    proxy.answered.append(key)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self.received) - len(self.answered) - self.holding

    def release(self) -> None:
        """Stop holding: answer what waits and everything after."""
        self.hold_when = lambda: False
        self._open.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def offline_upstream() -> Iterator[str]:
    """The library's offline describer in a subprocess (``pipeline.lmm.cli serve``), stopped by PID."""
    from pipeline.lmm.server import offline_server_process

    with offline_server_process() as (_proc, url):
        yield url.removesuffix("/v1")


@pytest.fixture
def counting_lmm(offline_upstream: str) -> Iterator[CountingProxy]:
    """A fresh counting proxy in front of the offline describer."""
    proxy = CountingProxy(offline_upstream)
    yield proxy
    proxy.close()


# -- a real Prefect stack: flows/serve.sh and flows/down.sh -------------------------------------------


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signal ``pid``'s process group and every descendant (flow runs have sessions of their own), by PID."""
    import psutil

    try:
        family = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)
    psutil.wait_procs(family, timeout=15)
    return [p.pid for p in family]


class PrefectStack:
    """Prefect server, work pool, lmm-api limit, deployments and a worker, started by flows/serve.sh."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "VENV": str(VENV_BIN.parent),
            "PREFECT_HOME": str(home),
            "PREFECT_PORT": str(self.port),
            "PREFECT_UI": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "LMM_API_LIMIT": "4",
            "DOWN_GRACE_SECONDS": "10",
        }
        self.env.pop("PREFECT_API_URL", None)

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    def pid(self, name: str) -> int | None:
        path = self.run_dir / f"{name}.pid"
        return int(path.read_text()) if path.exists() else None

    def serve(self) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", str(ROOT / "flows" / "serve.sh")],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"serve.sh failed:\n{done.stdout}\n{done.stderr}"
        self.env["PREFECT_API_URL"] = self.api_url
        return done

    def prefect(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(VENV_BIN / "prefect"), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert done.returncode == 0, (
                f"prefect {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )
        return done

    def run_deployment(
        self, name: str, params: dict[str, Any], watch: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        args = ["deployment", "run", name]
        for k, v in params.items():
            args += ["--param", f"{k}={json.dumps(v)}"]
        if watch:
            args.append("--watch")
        return self.prefect(*args, timeout=timeout)

    def api(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(
            self.api_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def down(self) -> None:
        subprocess.run(
            ["bash", str(ROOT / "flows" / "down.sh")],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for name in ("worker", "server"):  # whatever down.sh left, by PID
            pid = self.pid(name)
            if pid:
                kill_tree(pid)


@pytest.fixture(scope="module")
def prefect_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectStack]:
    """``flows/serve.sh`` with a fresh PREFECT_HOME and port; ``flows/down.sh`` (and kills by PID) after."""
    stack = PrefectStack(tmp_path_factory.mktemp("prefect-home"))
    try:
        stack.serve()
        yield stack
    finally:
        stack.down()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


# -- a reference build (threads, in the harness) ------------------------------------------------------


@pytest.fixture(scope="session")
def isaid_threads_build(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The bundled iSAID sample built with the thread runner (batches of 2 tiles), published to a store."""
    from flows.build import build_geopixeld

    out = tmp_path_factory.mktemp("isaid-threads")
    result = build_geopixeld(
        source=[str(DATA / "isaid")],
        out=str(out / "out"),
        format="isaid",
        batch_tiles=2,
        store=str(out / "store"),
        name="isaid",
        runner="threads",
    )
    return {**result, "root": out}


def sample_table(out_dir: str | Path) -> list[dict[str, Any]]:
    """``samples.parquet`` rows that must not depend on how the run was orchestrated, sorted by tile."""
    import pyarrow.parquet as pq

    cols = ["tile_id", "gcg_caption", "caption", "phrases", "masks", "flags", "max_severity", "lmm_model"]
    return sorted(
        pq.read_table(Path(out_dir) / "samples.parquet", columns=cols).to_pylist(), key=lambda r: r["tile_id"]
    )


class Kit:
    """Helpers for the test modules (they cannot import this conftest): ``kit.free_port()`` etc."""

    data = DATA
    root = ROOT
    free_port = staticmethod(free_port)
    wait_for = staticmethod(wait_for)
    kill_tree = staticmethod(kill_tree)
    sample_table = staticmethod(sample_table)
    request_key = staticmethod(request_key)
    CountingProxy = CountingProxy


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit
