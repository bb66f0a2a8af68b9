"""Focal Loss: reduces to cross-entropy, weights classes and examples as documented, sane gradients."""

import pytest
import torch
from torch.nn import functional as F

from lawclf.config import TrainConfig
from lawclf.losses import FocalLoss, make_loss

LOGITS = torch.tensor([[2.0, -1.0], [0.3, 0.1], [-1.5, 2.5], [0.0, 0.2], [1.0, 1.0]])
TARGETS = torch.tensor([0, 1, 1, 0, 1])


def test_gamma_zero_without_alpha_is_cross_entropy():
    assert torch.allclose(FocalLoss(alpha=None, gamma=0.0)(LOGITS, TARGETS), F.cross_entropy(LOGITS, TARGETS))


def test_alpha_weights_positive_and_negative_classes():
    ce = F.cross_entropy(LOGITS, TARGETS, reduction="none")
    got = FocalLoss(alpha=0.25, gamma=0.0).per_example(LOGITS, TARGETS)
    expected = torch.where(TARGETS == 1, 0.25, 0.75) * ce
    assert torch.allclose(got, expected)


def test_gamma_down_weights_easy_examples_more_than_hard_ones():
    ce = F.cross_entropy(LOGITS, TARGETS, reduction="none")
    focal = FocalLoss(alpha=None, gamma=2.0).per_example(LOGITS, TARGETS)
    p_t = torch.softmax(LOGITS, -1).gather(1, TARGETS.unsqueeze(1)).squeeze(1)
    assert torch.allclose(focal, (1 - p_t) ** 2 * ce, atol=1e-6)
    ratio = focal / ce
    easy, hard = int(p_t.argmax()), int(p_t.argmin())
    assert ratio[easy] < ratio[hard]


def test_example_weights_give_a_weighted_mean():
    loss = FocalLoss(alpha=None, gamma=0.0)
    w = torch.tensor([1.0, 0.0, 2.0, 0.0, 1.0])
    ce = F.cross_entropy(LOGITS, TARGETS, reduction="none")
    assert torch.allclose(loss(LOGITS, TARGETS, w), (ce * w).sum() / w.sum())
    assert torch.allclose(loss(LOGITS, TARGETS, torch.ones(5)), loss(LOGITS, TARGETS))


def test_gradient_pushes_the_true_class_up_and_is_finite():
    logits = LOGITS.clone().requires_grad_(True)
    FocalLoss(alpha=0.5, gamma=2.0)(logits, TARGETS).backward()
    g = logits.grad
    assert torch.isfinite(g).all()
    true_grad = g.gather(1, TARGETS.unsqueeze(1)).squeeze(1)
    assert (true_grad < 0).all()  # gradient descent raises the true class's logit


def test_extreme_logits_stay_finite():
    logits = torch.tensor([[80.0, -80.0], [-80.0, 80.0]], requires_grad=True)
    loss = FocalLoss(alpha=0.5, gamma=2.0)(logits, torch.tensor([1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_make_loss_and_bad_parameters():
    assert make_loss(TrainConfig(loss="ce")).gamma == 0.0
    focal = make_loss(TrainConfig(loss="focal", focal_alpha=0.3, focal_gamma=1.5))
    assert (focal.alpha, focal.gamma) == (0.3, 1.5)
    with pytest.raises(ValueError, match="TrainConfig.loss: must be one of"):
        make_loss(TrainConfig(loss="hinge"))
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)
