"""Loss functions: the paper's pixel-weighted cross-entropy and a soft Dice term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                           weights: torch.Tensor) -> torch.Tensor:
    """``sum(w(x) * -log p_l(x)(x)) / #pixels with w > 0`` (the paper's energy, averaged)."""
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    counted = (weights > 0).sum().clamp_min(1)
    return (ce * weights).sum() / counted


def soft_dice(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
              eps: float = 1.0) -> torch.Tensor:
    """``1 - mean soft Dice`` over the non-background classes, on pixels where mask > 0."""
    n_classes = logits.shape[1]
    prob = logits.float().softmax(1)[:, 1:]
    onehot = F.one_hot(target, n_classes).permute(0, 3, 1, 2)[:, 1:].float()
    m = mask.unsqueeze(1).float()
    inter = (prob * onehot * m).sum((0, 2, 3))
    total = ((prob + onehot) * m).sum((0, 2, 3))
    return 1.0 - ((2 * inter + eps) / (total + eps)).mean()


def unet_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
              dice_weight: float = 0.0) -> torch.Tensor:
    """Weighted cross-entropy, plus ``dice_weight`` times the soft Dice loss."""
    loss = weighted_cross_entropy(logits, target, weights)
    if dice_weight > 0:
        loss = loss + dice_weight * soft_dice(logits, target, weights > 0)
    return loss
