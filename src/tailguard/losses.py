"""Losses for a single-logit cross-encoder: BCE, focal, logit adjustment, graded targets, RankNet."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
LOSSES = ("bce", "weighted_bce", "focal", "logit_adjustment")


class LossConfig(BaseModel):
    """Which training loss and its parameters."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["bce", "weighted_bce", "focal", "logit_adjustment"] = Field(
        "bce",
        description="bce (per-row weights honoured), weighted_bce (plus pos_weight), "
        "focal (Lin et al. 2017), logit_adjustment (Menon et al. 2021).",
    )
    pos_weight: float | None = Field(
        None, gt=0, description="weighted_bce: extra weight of positive rows (> 0); None = 1."
    )
    gamma: float = Field(
        2.0, ge=0, le=10, description="focal: focusing exponent (0 <= gamma <= 10; 0 = BCE)."
    )
    alpha: float | None = Field(
        None,
        ge=0,
        le=1,
        description="focal: weight of positives, 1 - alpha for negatives (0..1); None = off.",
    )
    tau: float = Field(
        1.0, ge=0, le=10, description="logit_adjustment: temperature of the prior shift (0..10)."
    )
    prior: float | None = Field(
        None, gt=0, lt=1, description="logit_adjustment: positive share of the training data (0 < prior < 1)."
    )

    @model_validator(mode="after")
    def _prior_needed(self) -> LossConfig:
        if self.name == "logit_adjustment" and self.prior is None:
            raise ValueError("logit_adjustment needs prior: the training positive share, 0 < prior < 1")
        return self


def _reduce(per_row: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    # mean(w * l), not sum(w*l)/sum(w): weights average 1 over the split, so a batch of tail rows counts more.
    if weights is None:
        return per_row.mean()
    return (per_row * weights.to(per_row.dtype).reshape(per_row.shape)).mean()


def _prepare(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.reshape(-1)
    return logits, labels.reshape(-1).to(logits.dtype)


def weighted_bce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    pos_weight: float | None = None,
) -> torch.Tensor:
    """Binary cross-entropy on logits, per-row weights and an optional positive-class weight."""
    logits, labels = _prepare(logits, labels)
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none", pos_weight=pw)
    return _reduce(per_row, weights)


def focal(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    gamma: float = 2.0,
    alpha: float | None = None,
) -> torch.Tensor:
    """Focal loss -alpha_t (1 - p_t)^gamma log p_t, from BCE for stability; gamma 0, alpha None = BCE."""
    logits, labels = _prepare(logits, labels)
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    per_row = bce if gamma == 0 else (1 - torch.exp(-bce)).pow(gamma) * bce
    if alpha is not None:
        per_row = (alpha * labels + (1 - alpha) * (1 - labels)) * per_row
    return _reduce(per_row, weights)


def logit_adjusted(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    prior: float = 0.5,
    tau: float = 1.0,
) -> torch.Tensor:
    """Logit-adjusted BCE (Menon et al. 2021) for one logit z = f1 - f0: BCE(z + tau*log(prior/(1-prior))).

    Training with the prior added makes the raw logit estimate the balanced (prior-free) score; predict
    with the logit as it is.
    """
    logits, labels = _prepare(logits, labels)
    shift = tau * (math.log(prior) - math.log1p(-prior))
    per_row = F.binary_cross_entropy_with_logits(logits + shift, labels, reduction="none")
    return _reduce(per_row, weights)


def make_loss(name: str, **params: float | None) -> LossFn:
    """Loss function (logits, labels, weights | None) -> scalar tensor; parameters checked by LossConfig."""
    config = LossConfig(name=name, **params)
    if config.name in ("bce", "weighted_bce"):
        pos_weight = config.pos_weight if config.name == "weighted_bce" else None

        def loss(
            logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
        ) -> torch.Tensor:
            return weighted_bce(logits, labels, weights, pos_weight=pos_weight)

    elif config.name == "focal":

        def loss(
            logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
        ) -> torch.Tensor:
            return focal(logits, labels, weights, gamma=config.gamma, alpha=config.alpha)

    else:
        assert config.prior is not None

        def loss(
            logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
        ) -> torch.Tensor:
            return logit_adjusted(logits, labels, weights, prior=config.prior, tau=config.tau)

    loss.__name__ = f"{config.name}_loss"
    return loss


def graded_targets(relevance: torch.Tensor | list[float], low: float, high: float) -> torch.Tensor:
    """Soft targets in [0, 1]: (relevance - low) / (high - low), float32, same shape as relevance.

    low / high are the training frame's min / max relevance (Home Depot 1..3: 2.33 -> 0.665, 3 -> 1).
    Raises ValueError when high <= low (one relevance value carries no graded signal).
    """
    if not high > low:
        raise ValueError(f"graded targets need two different relevance values; min {low} = max {high}")
    rel = torch.as_tensor(relevance, dtype=torch.float32)
    return ((rel - low) / (high - low)).clamp(0.0, 1.0)


def graded_mse(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean (sigmoid(logit) - target)^2 with per-row weights; targets in [0, 1] (graded_targets)."""
    logits, targets = _prepare(logits, targets)
    return _reduce((torch.sigmoid(logits) - targets) ** 2, weights)


def ranknet_pairwise(logits: torch.Tensor, relevance: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """RankNet loss (Burges et al. 2005) over the pairs of rows in one group with different relevance.

    For every pair i, j with group[i] == group[j] and relevance[i] > relevance[j]:
    log(1 + exp(-(z_i - z_j))) = softplus(z_j - z_i), averaged over those pairs. Shapes: (n,) each; group is
    an integer query id. A batch without such a pair gives 0 (still attached to the graph). Cost O(n^2) per
    batch: 64 rows -> 4,096 pair slots, negligible next to the encoder.
    """
    z = logits.reshape(-1)
    rel = relevance.reshape(-1).to(z.dtype)
    g = group.reshape(-1)
    better = (g[:, None] == g[None, :]) & (rel[:, None] > rel[None, :])
    if not bool(better.any()):
        return z.sum() * 0.0
    diff = z[None, :] - z[:, None]  # [i, j] = z_j - z_i
    return F.softplus(diff[better]).mean()
