"""Describe: prepared tiles → LMM descriptions → one grounded GCG caption per tile.

Per tile, the selection policy (:mod:`pipeline.selection`) decides which objects are described alone and
which are grounded through groups. The requests of one tile:

* one **holistic** request (clean tile);
* one **instance** request per single (the set-of-marks tile, the object's mark number);
* one **cluster** request per described group (clean tile, count word, refined position); groups past the
  policy's call budget get a measured sentence instead (count word, category, position: no call);
* one **compose** request (text only) that fuses the sentences above into one paragraph, keeping every
  ``<p> phrase </p> [SEG]`` exactly once and in order. The answer is checked (:func:`check_compose`); when it
  changes, drops or adds a phrase, the plain concatenation is kept and the sample is flagged.

Sentences are ordered category by category (singles first, then that category's groups), each object's
phrase marked ``<p> phrase </p> [SEG]`` with its mask in ``[SEG]`` order, and checked
(:mod:`pipeline.validate`). Every tile ends as a row of ``samples.parquet``, flagged when something looks
wrong — including when the LMM failed (then the object keeps a measured sentence, so it stays grounded) —
and every call is kept in ``lmm_calls.parquet``. Both files are written batch by batch (bounded memory) to
temporary names and renamed when complete.

With no ``base_url``, the embedded offline describer is started on 127.0.0.1 and spoken to over HTTP
through the same client as any remote endpoint.

The stage is split along its seams: :mod:`.config` (settings), :mod:`.plan` (requests per tile),
:mod:`.ground` (checked, grounded sentences), :mod:`.compose` (the fused paragraph and the sample row),
:mod:`.write` (streamed outputs and the report) and :mod:`.run` (the endpoint, batches, the entry point).
"""

from __future__ import annotations

from .compose import check_compose, compose_flags, compose_request, finish_sample
from .config import DescribeConfig
from .ground import Draft, ground_tile, measured_sentence
from .plan import Subject, TilePlan, dataset_categories, plan_batch, plan_tile, tile_batches
from .run import (
    answer_usable,
    batch_client,
    client_settings,
    describe,
    describe_batch,
    first_round,
    second_opinion,
)
from .write import DescribeSummary, DescribeWriter, iter_calls, merge_describe_parts, write_describe_outputs

__all__ = ['DescribeConfig', 'DescribeSummary', 'DescribeWriter', 'Draft', 'Subject', 'TilePlan', 'answer_usable', 'batch_client', 'check_compose', 'client_settings', 'compose_flags', 'compose_request', 'dataset_categories', 'describe', 'describe_batch', 'finish_sample', 'first_round', 'ground_tile', 'iter_calls', 'measured_sentence', 'merge_describe_parts', 'plan_batch', 'plan_tile', 'second_opinion', 'tile_batches', 'write_describe_outputs']
