"""Errors of the SAM stage, each naming what to fix (the checkpoint file, the missing extra)."""

from __future__ import annotations

from pathlib import Path

INSTALL_HINT = "install geopixeld[sam] (pip install 'geopixeld[sam]': torch, torchvision, segment-anything)"


class SamError(Exception):
    """Any problem of the SAM stage that stops it before work starts (bad settings, bad weights)."""


class SamUnavailableError(SamError, ImportError):
    """torch or segment-anything is not installed."""

    def __init__(self, missing: str) -> None:
        self.missing = missing
        super().__init__(f"SAM masks need {missing}, which is not installed: {INSTALL_HINT}")


class CheckpointError(SamError):
    """A checkpoint that is missing, unreadable, not a SAM state dict, or of another model type.

    The message is ``path: problem``; nothing is ever downloaded in its place.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def require_sam() -> None:
    """Raise :class:`SamUnavailableError` unless torch, torchvision and segment-anything import."""
    for module in ("torch", "torchvision", "segment_anything"):
        try:
            __import__(module)
        except ImportError:
            raise SamUnavailableError(module.replace("_", "-")) from None
