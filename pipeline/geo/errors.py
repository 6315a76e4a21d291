"""Errors of the geo layers."""

from __future__ import annotations


class GeoError(ValueError):
    """A geo layer cannot be written: bad CRS, unreadable table or a missing optional dependency."""
