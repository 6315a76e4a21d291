"""Errors raised by the release tooling.

Every error is a :class:`ReleaseError`, so the command line can print the message and exit non-zero
without a traceback. Messages name the file, release or version involved and say what to do next.
"""

from __future__ import annotations


class ReleaseError(Exception):
    """Base class for every release failure that should be shown to a user as a plain message."""


class InvalidSpecError(ReleaseError, ValueError):
    """A release name, version or ``NAME==VERSION`` spec could not be parsed."""


class ExportError(ReleaseError):
    """The EXPORT folder handed to ``publish`` is not a valid export (missing ids, bad shard names...)."""


class ReleaseExistsError(ReleaseError):
    """The version is already published (or another publish of it holds the claim)."""


class ReleaseNotFoundError(ReleaseError):
    """No visible release matches the requested name and version."""


class BumpTooSmallError(ReleaseError):
    """The requested version bump is smaller than the change against the previous version implies."""


class ChecksumError(ReleaseError):
    """A file's bytes do not match the sha256 or size recorded in the release manifest."""


class CacheConflictError(ReleaseError):
    """A local copy of a release differs from the store's (releases are immutable, so one was altered)."""
