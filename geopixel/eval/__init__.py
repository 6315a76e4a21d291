"""Evaluation of grounded captioning (GCG) and referring segmentation; torch-free.

:mod:`~geopixel.eval.gcg` (AP50, mIoU, Recall, caption metrics by uni/multi-target), :mod:`~geopixel.eval.captions`
(CIDEr-D, METEOR), :mod:`~geopixel.eval.meteor_jar` (the METEOR 1.5 jar through Java),
:mod:`~geopixel.eval.meteor` (METEOR reimplemented), :mod:`~geopixel.eval.similarity` (phrase similarity), :mod:`~geopixel.eval.matching` (IoU and
one-to-one matching), :mod:`~geopixel.eval.refer` (P@X, oIoU, mIoU).
"""

from .captions import caption_metrics, caption_scores, cider_d, meteor, strip_markup, tokenize
from .gcg import GCGResult, evaluate_files, evaluate_gcg, load_ground_truth, read_predictions
from .refer import evaluate_refer_files, refer_metrics
from .similarity import get_similarity

__all__ = [
    "GCGResult",
    "caption_metrics",
    "caption_scores",
    "cider_d",
    "evaluate_files",
    "evaluate_gcg",
    "evaluate_refer_files",
    "get_similarity",
    "load_ground_truth",
    "meteor",
    "read_predictions",
    "refer_metrics",
    "strip_markup",
    "tokenize",
]
