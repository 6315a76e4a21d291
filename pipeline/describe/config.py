"""The describe stage's settings (the CLI options, the flows' ``describe_options``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..lmm.types import EndpointConfig
from ..selection import POLICIES, SelectionPolicy


class DescribeConfig(EndpointConfig):
    """Settings of the describe stage (the CLI's options).

    Attributes:
        (endpoint): ``base_url``, ``model``, ``api_key_env``, ``concurrency``, ``timeout_s``,
            ``max_retries``, ``prompts``, ``cache_dir`` (default ``DIR/lmm_cache``), ``send_facts``: see
            :class:`~pipeline.lmm.types.EndpointConfig`.
        policy: ``geopixeld`` (GeoPixelD's shape: few singles, groups, one fused caption) or
            ``all-instances`` (every marked object and prepared cluster described, no compose).
        max_instances, max_group_calls, max_phrases, compose: override the policy's knobs
            (:class:`~pipeline.selection.SelectionPolicy`); ``None`` keeps the policy's value.
        backoff_base_s: first retry's back-off (doubling, with jitter).
        metric_priors: use the instance prompt with measured size and orientation when the GSD is known.
        phrase_naming: ``indexed`` (``tennis court-1``, as GeoPixelD) or ``noun`` (the sentence's words).
        detail: image detail level sent with images.
        temperature, max_tokens: sampling temperature and answer length limit.
        second_opinion: ask every instance and group request again of this model (same endpoint) and
            score the two answers' agreement (:mod:`pipeline.agreement`); off by default (doubles cost).
        samples: 2 asks every instance and group request twice of the same model (needs
            ``temperature`` > 0); the second answer is the second opinion.
        batch_tiles: tiles described per batch (bounds memory: images of a batch are held at once).
        prices_file: price table for cost estimates.
        instances_per_call: marked objects of one tile asked in one request (1: one per call, as the
            paper; K > 1: :mod:`pipeline.lmm.grouped`, JSON answers, bad ones asked again singly).
        batch: answer through the OpenAI Batch API (:mod:`pipeline.batchmode`; needs ``base_url``).
        batch_poll_s, batch_max_wait_s: seconds between batch status checks; longest wait (None: until done).
    """

    policy: str = "geopixeld"
    max_instances: int | None = Field(None, ge=0)
    max_group_calls: int | None = Field(None, ge=0)
    max_phrases: int | None = Field(None, ge=1)
    compose: bool | None = None
    backoff_base_s: float = Field(0.5, ge=0)
    metric_priors: bool = False
    phrase_naming: str = "indexed"
    detail: str = "auto"
    second_opinion: str | None = None
    samples: int = Field(1, ge=1, le=2)
    temperature: float = 0.2
    max_tokens: int = 300
    batch_tiles: int = Field(32, ge=1)
    prices_file: str | None = None
    instances_per_call: int = Field(1, ge=1, le=64)
    batch: bool = False
    batch_poll_s: float = Field(30.0, gt=0)
    batch_max_wait_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_second_opinion(self) -> DescribeConfig:
        if self.samples > 1 and self.second_opinion:
            raise ValueError("give either --second-opinion MODEL or --samples 2, not both")
        if self.samples > 1 and self.temperature <= 0:
            raise ValueError("--samples 2 needs a temperature above 0 (at 0 both samples are the same answer)")
        if self.batch and (self.second_opinion or self.samples > 1):
            raise ValueError("a second opinion is asked live, after the first answers: not with --batch")
        return self

    def selection(self) -> SelectionPolicy:
        """The selection policy with this config's overrides."""
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        return SelectionPolicy.preset(
            self.policy,
            max_instances=self.max_instances,
            max_group_calls=self.max_group_calls,
            max_phrases=self.max_phrases,
            compose=self.compose,
        )

