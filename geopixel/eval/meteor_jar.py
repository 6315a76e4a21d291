"""METEOR with the METEOR 1.5 jar that ``pycocoevalcap`` ships, as coco-caption (and GLaMM) score it.

coco-caption runs ``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`` from the jar's folder (the
paraphrase table ``data/paraphrase-en.gz`` sits beside it), sends one ``SCORE ||| ref ||| … ||| hyp`` line per
image, reads back that image's statistics, then sends ``EVAL ||| stats ||| …`` and reads one score per image
and the corpus score. :class:`MeteorJar` does the same with a Java runtime found on ``PATH`` (or ``java``):
the scores are the jar's own. Start-up takes a few seconds (the jar loads WordNet and the paraphrase table)
and up to 2 GB of Java heap.

Without Java (or without ``pycocoevalcap``) :mod:`geopixel.eval.meteor` is the fallback; see
:func:`meteor_backend` for how ``geopixel eval`` chooses.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import IO

JAR_NAME = "meteor-1.5.jar"
PARAPHRASES = Path("data") / "paraphrase-en.gz"


def find_meteor_jar() -> Path | None:
    """``pycocoevalcap/meteor/meteor-1.5.jar`` when the package and its paraphrase table are installed."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        jar = Path(root) / "meteor" / JAR_NAME
        if jar.is_file() and (jar.parent / PARAPHRASES).is_file():
            return jar
    return None


@lru_cache(maxsize=4)
def java_version(java: str = "java") -> str | None:
    """First line of ``java -version`` (e.g. ``openjdk version "17.0.15" …``), ``None`` without a runtime."""
    exe = shutil.which(java)
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[0].strip() if lines else "java"


def meteor_jar_available(java: str = "java") -> bool:
    """Whether the jar can be run here: ``pycocoevalcap`` installed and a working Java runtime."""
    return find_meteor_jar() is not None and java_version(java) is not None


def _clean(text: str) -> str:
    """One line without the jar's field separator (as coco-caption's wrapper does)."""
    return " ".join(text.replace("|||", " ").split())


class MeteorJar:
    """A running METEOR 1.5 jar (``-stdio -l en -norm``); use as a context manager.

    Args:
        jar: the jar (default: :func:`find_meteor_jar`).
        java: the Java executable.
        memory: Java heap limit (``-Xmx``), coco-caption's 2G by default.
        modules: the jar's matchers (``-m``), e.g. ``("exact", "stem")``; default all of the jar's
            (exact stem synonym paraphrase), as coco-caption.
    """

    def __init__(self, jar: str | Path | None = None, java: str = "java", memory: str = "2G",
                 modules: Sequence[str] | None = None) -> None:
        found = Path(jar) if jar else find_meteor_jar()
        if found is None or not found.is_file():
            raise FileNotFoundError(f"{found or JAR_NAME}: METEOR 1.5 jar not found (pip install pycocoevalcap)")
        exe = shutil.which(java)
        if exe is None:
            raise FileNotFoundError(f"{java}: no Java runtime on PATH (e.g. apt-get install default-jre-headless)")
        self.jar = found
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        extra = ["-m", " ".join(modules)] if modules else []
        self._proc = subprocess.Popen(
            [exe, "-jar", f"-Xmx{memory}", str(found), "-", "-", "-stdio", "-l", "en", "-norm", *extra],
            cwd=found.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )

    def __enter__(self) -> MeteorJar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the Java process (by its own handle) and drop its error log."""
        proc = self._proc
        if proc.poll() is None:
            try:
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()
        self._stderr.close()

    def _ask(self, line: str) -> str:
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write((line + "\n").encode("utf-8"))
            proc.stdin.flush()
        except OSError:
            pass  # the process died: reported below with its error output
        return self._read()

    def _read(self) -> str:
        assert self._proc.stdout is not None
        out = self._proc.stdout.readline().decode("utf-8").strip()
        if not out:
            self._stderr.seek(0)
            tail = self._stderr.read().decode("utf-8", "replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{self.jar}: the METEOR jar stopped answering: {' | '.join(tail) or 'no output'}")
        return out

    def stats(self, hypothesis: str, references: Sequence[str]) -> str:
        """The jar's sufficient statistics of one hypothesis against its references (one line)."""
        refs = [_clean(r) for r in references] or [""]
        return self._ask(" ||| ".join(["SCORE", *refs, _clean(hypothesis)]))

    def score(self, candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> tuple[float, dict[str, float]]:
        """Corpus METEOR and per-image scores of plain-text candidates against their references.

        Returns:
            ``(corpus score, {image id: score})`` from the jar's ``EVAL`` (corpus = aggregate statistics).
        """
        if set(candidates) != set(references):
            raise ValueError("candidates and references must cover the same image ids")
        keys = list(candidates)
        if not keys:
            return 0.0, {}
        stats = [self.stats(candidates[k], references[k]) for k in keys]
        first = self._ask(" ||| ".join(["EVAL", *stats]))
        scores = [float(first)] + [float(self._read()) for _ in keys[1:]]
        corpus = float(self._read())
        return corpus, dict(zip(keys, scores, strict=True))


_SHARED: dict[str, MeteorJar] = {}
_LOCK = threading.Lock()


def _close_shared() -> None:
    for jar in _SHARED.values():
        jar.close()
    _SHARED.clear()


def meteor_jar_score(
    candidates: Mapping[str, str], references: Mapping[str, Sequence[str]], java: str = "java"
) -> tuple[float, dict[str, float]]:
    """:meth:`MeteorJar.score` on a jar shared by this process: started on first use (it takes seconds to
    load its WordNet and paraphrase data), stopped at exit; restarted once if it has died."""
    with _LOCK:
        for attempt in (1, 2):
            jar = _SHARED.get(java)
            if jar is None:
                if not _SHARED:
                    atexit.register(_close_shared)
                jar = _SHARED[java] = MeteorJar(java=java)
            try:
                return jar.score(candidates, references)
            except RuntimeError:
                jar.close()
                del _SHARED[java]
                if attempt == 2:
                    raise
    raise AssertionError("unreachable")


BACKENDS = ("auto", "jar", "python")


def meteor_backend(name: str | None = None) -> str:
    """The METEOR backend to use: ``jar`` or ``python``.

    ``name`` ``None`` reads ``$GEOPIXEL_METEOR`` (default ``auto``); ``auto`` is ``jar`` when
    :func:`meteor_jar_available`, else ``python``; ``jar`` without a jar or Java is an error.
    """
    name = (name or os.environ.get("GEOPIXEL_METEOR") or "auto").lower()
    if name not in BACKENDS:
        raise ValueError(f"METEOR backend {name!r}: choose from {', '.join(BACKENDS)}")
    if name == "auto":
        return "jar" if meteor_jar_available() else "python"
    if name == "jar" and not meteor_jar_available():
        raise RuntimeError("METEOR backend 'jar' needs pycocoevalcap and a Java runtime "
                           "(pip install pycocoevalcap; apt-get install default-jre-headless)")
    return name


def jar_label() -> str:
    """How jar scores are reported: ``METEOR 1.5 jar (pycocoevalcap; <java version>)``."""
    return f"METEOR 1.5 jar (pycocoevalcap; {java_version() or 'java'})"


__all__ = [
    "BACKENDS",
    "MeteorJar",
    "find_meteor_jar",
    "jar_label",
    "java_version",
    "meteor_backend",
    "meteor_jar_available",
    "meteor_jar_score",
]
