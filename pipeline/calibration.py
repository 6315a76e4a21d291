"""Calibration of the quality flags from reviewers' decisions: which flags find real problems.

For every flag code, among the reviewed samples carrying it: how often reviewers **rejected** or **fixed**
the sample versus **accepted** it (a code whose samples are nearly always accepted costs review time and
finds little). For reviewed samples with no flag at all (the review queue's spot checks), the share rejected
or fixed is the **miss estimate**: how often a problem gets through without any flag.

Decisions are read through :mod:`pipeline.export.decisions` (the review database, ``DATA/review.sqlite`` by
default, or a decisions Parquet file); ``samples.parquet`` is streamed (``tile_id`` and ``flags`` only), so
memory holds the decisions index and one batch of samples. Used by ``geopixeld review report``.

A code's ``problem_rate`` = (rejected + fixed) / reviewed; :meth:`Calibration.weights` turns the rates of
codes with enough reviews into weights for :func:`pipeline.validate.review_score`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .export.decisions import ReviewDecisions, open_decisions
from .validate import SEVERITY_RANK

#: Samples read per batch from samples.parquet.
BATCH_ROWS = 1024


@dataclass
class Outcomes:
    """Review outcomes of a set of samples.

    Attributes:
        samples: samples in the set (reviewed or not).
        accepted, rejected, fixed: reviewed samples per decision.
    """

    samples: int = 0
    accepted: int = 0
    rejected: int = 0
    fixed: int = 0

    @property
    def reviewed(self) -> int:
        return self.accepted + self.rejected + self.fixed

    def rate(self, n: int) -> float | None:
        """``n`` as a share of the reviewed samples (None when none was reviewed)."""
        return n / self.reviewed if self.reviewed else None

    @property
    def problem_rate(self) -> float | None:
        """(rejected + fixed) / reviewed."""
        return self.rate(self.rejected + self.fixed)

    def interval(self, z: float = 1.96) -> tuple[float, float] | None:
        """Wilson score interval (95 % by default) of :attr:`problem_rate`."""
        n = self.reviewed
        if not n:
            return None
        p = (self.rejected + self.fixed) / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def add(self, status: str | None) -> None:
        self.samples += 1
        if status == "accepted":
            self.accepted += 1
        elif status == "rejected":
            self.rejected += 1
        elif status == "fixed":
            self.fixed += 1

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reviewed": self.reviewed, "problem_rate": self.problem_rate,
                "accept_rate": self.rate(self.accepted), "reject_rate": self.rate(self.rejected),
                "fix_rate": self.rate(self.fixed), "interval95": self.interval()}


@dataclass
class Calibration:
    """Per flag code and for unflagged samples: what reviewers decided (see the module docstring).

    Attributes:
        source: where the decisions came from.
        samples: samples in ``samples.parquet``; ``reviewed``: of them with a decision.
        by_code: outcomes of the samples carrying each flag code (a sample counts once per code).
        severity: the highest severity each code was raised with.
        unflagged: outcomes of samples without any flag (the spot checks when reviewed).
        flagged: outcomes of samples with at least one flag.
    """

    source: str
    samples: int = 0
    reviewed: int = 0
    by_code: dict[str, Outcomes] = field(default_factory=dict)
    severity: dict[str, str] = field(default_factory=dict)
    unflagged: Outcomes = field(default_factory=Outcomes)
    flagged: Outcomes = field(default_factory=Outcomes)

    @property
    def miss_estimate(self) -> float | None:
        """Share of reviewed unflagged samples that were rejected or fixed."""
        return self.unflagged.problem_rate

    def weights(self, min_reviewed: int = 20) -> dict[str, float]:
        """Per code with at least ``min_reviewed`` reviews: its problem rate, a weight for
        :func:`pipeline.validate.review_score`."""
        return {c: o.problem_rate for c, o in sorted(self.by_code.items())
                if o.reviewed >= min_reviewed and o.problem_rate is not None}

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "samples": self.samples, "reviewed": self.reviewed,
            "miss_estimate": self.miss_estimate,
            "unflagged": self.unflagged.as_dict(), "flagged": self.flagged.as_dict(),
            "by_code": {c: {"severity": self.severity.get(c), **o.as_dict()} for c, o in self._ordered()},
        }

    def _ordered(self) -> list[tuple[str, Outcomes]]:
        return sorted(self.by_code.items(),
                      key=lambda kv: (-SEVERITY_RANK.get(self.severity.get(kv[0], "none"), 0), -kv[1].samples, kv[0]))

    def markdown(self) -> str:
        """The report as a Markdown table (for the run report and the terminal)."""

        def pct(x: float | None) -> str:
            return "–" if x is None else f"{100 * x:.0f} %"

        lines = [
            f"Review calibration ({self.source}): {self.reviewed:,} of {self.samples:,} samples reviewed.",
            "",
            "| flag code | severity | samples | reviewed | rejected | fixed | accepted | rejected or fixed (95 % CI) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for code, o in self._ordered():
            ci = o.interval()
            span = f" ({pct(ci[0])}–{pct(ci[1])})" if ci else ""
            lines.append(f"| {code} | {self.severity.get(code, '')} | {o.samples:,} | {o.reviewed:,} | {o.rejected:,} | "
                         f"{o.fixed:,} | {o.accepted:,} | {pct(o.problem_rate)}{span} |")
        u = self.unflagged
        ci = u.interval()
        span = f" (95 % CI {pct(ci[0])}–{pct(ci[1])})" if ci else ""
        lines += [
            "",
            f"Unflagged samples: {u.samples:,}, of them {u.reviewed:,} reviewed as spot checks: {u.rejected:,} rejected, "
            f"{u.fixed:,} fixed, {u.accepted:,} accepted. Miss estimate (rejected or fixed): "
            f"{pct(self.miss_estimate)}{span}.",
        ]
        return "\n".join(lines)


def calibrate_from(data_dir: str | Path, decisions: ReviewDecisions) -> Calibration:
    """The calibration of ``data_dir``'s samples against ``decisions`` (samples streamed batch by batch)."""
    path = Path(data_dir) / "samples.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no samples.parquet — run `geopixeld describe` first")
    try:
        handle = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable samples file ({exc})") from exc
    missing = {"tile_id", "flags"} - set(handle.schema_arrow.names)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    out = Calibration(decisions.source)
    for batch in handle.iter_batches(batch_size=BATCH_ROWS, columns=["tile_id", "flags"]):
        for row in batch.to_pylist():
            d = decisions.get(str(row["tile_id"]))
            status = d.status if d else None
            out.samples += 1
            out.reviewed += status is not None
            flags = row["flags"] or []
            if not flags:
                out.unflagged.add(status)
                continue
            out.flagged.add(status)
            for code in sorted({f["code"] for f in flags}):
                out.by_code.setdefault(code, Outcomes()).add(status)
            for f in flags:
                sev = f.get("severity") or "none"
                if SEVERITY_RANK.get(sev, 0) > SEVERITY_RANK.get(out.severity.get(f["code"], "none"), 0):
                    out.severity[f["code"]] = sev
    return out


def calibrate(data_dir: str | Path, decisions: str | Path | None = None, db_url: str | None = None) -> Calibration:
    """The calibration of ``data_dir`` from its review decisions: a decisions Parquet file, a database URL,
    or ``DATA/review.sqlite`` (see :func:`pipeline.export.decisions.open_decisions`)."""
    return calibrate_from(data_dir, open_decisions(data_dir, decisions, db_url))


def write_report(calibration: Calibration, path: str | Path) -> None:
    """The calibration as JSON (``.json``) or Markdown (any other suffix), written atomically."""
    p = Path(path)
    text = json.dumps(calibration.as_dict(), indent=1) if p.suffix == ".json" else calibration.markdown() + "\n"
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text)
    tmp.replace(p)


__all__ = ["Calibration", "Outcomes", "calibrate", "calibrate_from", "write_report"]
