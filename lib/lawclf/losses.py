"""Training losses: Focal Loss (the original recipe) and plain cross-entropy.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from lawclf.config import TrainConfig


class FocalLoss(nn.Module):
    """Focal Loss for 2-class logits (Lin et al., 2017): ``-alpha_t (1 - p_t)^gamma log p_t``.

    ``p_t`` is the predicted probability of the true class. ``gamma`` > 0 shrinks the loss
    of examples the model already gets right with confidence, so training attends to the
    hard ones; ``alpha`` weights class 1 (legal) and ``1 - alpha`` class 0. ``alpha=None``
    and ``gamma=0`` is exactly cross-entropy. Optional per-example ``weights`` give a
    weighted mean (sum(w * loss) / sum(w)).
    """

    def __init__(self, alpha: Optional[float] = 0.5, gamma: float = 2.0):
        super().__init__()
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"focal alpha must be in [0, 1] or None, got {alpha}")
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.alpha, self.gamma = alpha, gamma

    def per_example(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of each example (no reduction)."""
        log_p = F.log_softmax(logits.float(), dim=-1)
        log_pt = log_p.gather(1, targets.long().unsqueeze(1)).squeeze(1)
        loss = -log_pt
        if self.gamma > 0:
            loss = loss * (1.0 - log_pt.exp()).clamp(min=0.0).pow(self.gamma)
        if self.alpha is not None:
            alpha_t = torch.where(targets == 1, self.alpha, 1.0 - self.alpha).to(loss.dtype)
            loss = alpha_t * loss
        return loss

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        loss = self.per_example(logits, targets)
        if weights is None:
            return loss.mean()
        weights = weights.to(loss.dtype)
        return (loss * weights).sum() / weights.sum().clamp(min=1e-12)


def make_loss(cfg: TrainConfig) -> FocalLoss:
    """``focal`` (alpha, gamma from the config) or ``ce`` (plain cross-entropy)."""
    if cfg.loss == "focal":
        return FocalLoss(alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
    if cfg.loss == "ce":
        return FocalLoss(alpha=None, gamma=0.0)
    raise ValueError(f"loss must be 'focal' or 'ce', got {cfg.loss!r}")



__all__ = ["FocalLoss", "make_loss"]
