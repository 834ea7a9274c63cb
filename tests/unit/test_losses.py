"""Loss options for the single-logit cross-encoder: BCE, weighted BCE, focal, logit adjustment."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from tailguard.losses import LossConfig, make_loss


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 1, generator=gen) * 3
    labels = (torch.rand(64, generator=gen) < 0.2).float()
    return logits, labels


def test_bce_matches_torch_and_honours_weights(batch):
    logits, labels = batch
    loss = make_loss("bce")
    expected = F.binary_cross_entropy_with_logits(logits.reshape(-1), labels)
    assert torch.allclose(loss(logits, labels, None), expected)
    weights = torch.linspace(0.5, 1.5, 64)
    per_row = F.binary_cross_entropy_with_logits(logits.reshape(-1), labels, reduction="none")
    assert torch.allclose(loss(logits, labels, weights), (per_row * weights).mean())


def test_weighted_bce_pos_weight_scales_positive_rows_only(batch):
    logits, labels = batch
    per_row = F.binary_cross_entropy_with_logits(logits.reshape(-1), labels, reduction="none")
    expected = (per_row * torch.where(labels == 1, 4.0, 1.0)).mean()
    assert torch.allclose(make_loss("weighted_bce", pos_weight=4.0)(logits, labels, None), expected)


def test_focal_equals_bce_at_gamma_zero_without_alpha(batch):
    logits, labels = batch
    weights = torch.rand(64)
    focal = make_loss("focal", gamma=0.0, alpha=None)
    assert torch.allclose(focal(logits, labels, weights), make_loss("bce")(logits, labels, weights))


def test_focal_down_weights_easy_examples():
    labels = torch.tensor([1.0, 1.0])
    logits = torch.tensor([4.0, -1.0])  # first is easy (p=0.98), second hard (p=0.27)
    focal = make_loss("focal", gamma=2.0)
    easy, hard = (focal(logits[i : i + 1], labels[i : i + 1], None) for i in range(2))
    bce_easy, bce_hard = (F.binary_cross_entropy_with_logits(logits[i], labels[i]) for i in range(2))
    p_easy, p_hard = torch.sigmoid(logits)
    assert torch.allclose(easy, (1 - p_easy) ** 2 * bce_easy, atol=1e-6)
    assert torch.allclose(hard, (1 - p_hard) ** 2 * bce_hard, atol=1e-6)
    assert easy / bce_easy < hard / bce_hard


def test_focal_alpha_weights_classes(batch):
    logits, labels = batch
    base = make_loss("focal", gamma=1.0)
    with_alpha = make_loss("focal", gamma=1.0, alpha=0.25)
    pos, neg = labels == 1, labels == 0
    assert torch.allclose(
        with_alpha(logits[pos], labels[pos], None), 0.25 * base(logits[pos], labels[pos], None)
    )
    assert torch.allclose(
        with_alpha(logits[neg], labels[neg], None), 0.75 * base(logits[neg], labels[neg], None)
    )


@pytest.mark.parametrize(("prior", "tau"), [(0.1, 1.0), (0.3, 2.0), (0.9, 0.5)])
def test_logit_adjustment_shifts_by_tau_log_prior_odds(batch, prior, tau):
    logits, labels = batch
    shift = tau * math.log(prior / (1 - prior))
    expected = F.binary_cross_entropy_with_logits(logits.reshape(-1) + shift, labels)
    assert torch.allclose(make_loss("logit_adjustment", prior=prior, tau=tau)(logits, labels, None), expected)


def test_logit_adjustment_optimum_is_balanced():
    # With a 10% prior, the BCE optimum of a constant logit is log(0.1/0.9); the adjusted optimum is 0.
    labels = torch.tensor([1.0] + [0.0] * 9)
    z = torch.zeros(1, requires_grad=True)
    loss = make_loss("logit_adjustment", prior=0.1, tau=1.0)
    loss(z.expand(10), labels, None).backward()
    assert abs(float(z.grad)) < 1e-6


def test_gradients_flow(batch):
    logits, labels = batch
    for name, params in [
        ("bce", {}),
        ("focal", {"gamma": 2.0, "alpha": 0.25}),
        ("logit_adjustment", {"prior": 0.2}),
    ]:
        z = logits.clone().requires_grad_(True)
        make_loss(name, **params)(z, labels, torch.ones(64)).backward()
        assert z.grad is not None and torch.isfinite(z.grad).all()


@pytest.mark.parametrize(
    ("name", "params", "option"),
    [
        ("focal", {"gamma": -1.0}, "gamma"),
        ("focal", {"alpha": 1.5}, "alpha"),
        ("logit_adjustment", {}, "prior"),
        ("logit_adjustment", {"prior": 1.0}, "prior"),
        ("weighted_bce", {"pos_weight": 0.0}, "pos_weight"),
        ("hinge", {}, "name"),
    ],
)
def test_bad_parameters_are_named(name, params, option):
    with pytest.raises(ValidationError) as err:
        make_loss(name, **params)
    assert option in str(err.value)


def test_loss_config_round_trips():
    config = LossConfig(name="focal", gamma=1.5, alpha=0.3)
    assert LossConfig(**config.model_dump()) == config
