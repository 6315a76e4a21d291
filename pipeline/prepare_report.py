"""What a prepare run reports: one record per source image, and the run's totals with every skip.

``ImageReport`` is written next to each image's part files (``OUT/parts/{image_id}/report.json``; a
resumed run reads it back), ``PrepareSummary`` is the run's summary (printed by ``geopixeld prepare``,
in ``OUT/prepare_report.json`` and in the flows' run report).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Skip

REPORT_VERSION = 1


@dataclass
class ImageReport:
    """What happened to one source image."""

    image_id: str
    image_path: str
    status: str  # ok | failed | reused
    tiles: int = 0
    instances: int = 0
    clusters: int = 0
    marks: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    repairs: int = 0
    skips: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    naming: dict[str, int] = field(default_factory=dict)
    signature: str = ""
    config_digest: str = ""
    version: int = REPORT_VERSION


@dataclass
class PrepareSummary:
    """Totals of a prepare run, and every skipped input with its reason."""

    out_dir: str
    images: int
    images_ok: int
    images_failed: int
    images_reused: int
    tiles: int
    instances: int
    clusters: int
    marks: int
    repairs: int
    dropped: dict[str, int]
    skipped: list[dict[str, str]]
    skipped_by_reason: dict[str, int]
    naming: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            f"prepare → {self.out_dir}",
            f"  images   {self.images} ({self.images_ok} done, {self.images_reused} reused, {self.images_failed} failed)",
            f"  tiles    {self.tiles}",
            f"  instances {self.instances} ({self.marks} marked), clusters {self.clusters}",
            f"  polygons repaired {self.repairs}",
        ]
        if self.naming:
            named = ", ".join(f"{k} {v}" for k, v in sorted(self.naming.items()))
            lines.append(f"  automatic masks named by the LMM: {named}")
        if self.dropped:
            lines.append("  dropped pieces: " + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())))
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)}:")
            for reason, n in sorted(self.skipped_by_reason.items(), key=lambda kv: -kv[1]):
                lines.append(f"    {n} × {reason}")
            for s in self.skipped[:10]:
                lines.append(f"    - {s['path']}: {s['reason']}")
            if len(self.skipped) > 10:
                lines.append(f"    ... {len(self.skipped) - 10} more in prepare_report.json")
        return "\n".join(lines)


def summarize(out_dir: str | Path, reports: Sequence[ImageReport], discover_skips: Sequence[Skip]) -> PrepareSummary:
    skipped = [s.to_dict() for s in discover_skips] + [s for r in reports for s in r.skips]
    dropped: Counter[str] = Counter()
    naming: Counter[str] = Counter()
    for r in reports:
        dropped.update(r.dropped)
        naming.update(r.naming)
    return PrepareSummary(
        out_dir=str(out_dir),
        images=len(reports) + sum(1 for s in discover_skips if s.kind == "image"),
        images_ok=sum(r.status == "ok" for r in reports),
        images_failed=sum(r.status == "failed" for r in reports) + sum(1 for s in discover_skips if s.kind == "image"),
        images_reused=sum(r.status == "reused" for r in reports),
        tiles=sum(r.tiles for r in reports),
        instances=sum(r.instances for r in reports),
        clusters=sum(r.clusters for r in reports),
        marks=sum(r.marks for r in reports),
        repairs=sum(r.repairs for r in reports),
        dropped=dict(dropped),
        skipped=[{k: v for k, v in s.items() if k != "trace"} for s in skipped],
        skipped_by_reason=dict(Counter(_reason_key(s["reason"]) for s in skipped)),
        naming=dict(naming),
    )


def _reason_key(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]
