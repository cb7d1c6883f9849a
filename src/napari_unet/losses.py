"""Loss functions: the paper's pixel-weighted cross-entropy, a soft Dice term and, for the
'distance' target, the regression of the normalised distance map."""

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


def distance_loss(logit: torch.Tensor, distance: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the sigmoid of ``logit`` against the 0..1 ``distance`` map,
    weighted by the paper's weight map (which stresses the gaps between touching objects,
    where the distance must dip) and averaged like :func:`weighted_cross_entropy`.

    Weighting by the map rather than uniformly: DSB 2018, 30 images, 400 s, one thread
    each side by side, AP@0.5 of the distance watershed 0.704 -> 0.775, touching pairs
    separated 51 % -> 60 %."""
    bce = F.binary_cross_entropy_with_logits(logit.float(), distance.float(), reduction="none")
    counted = (weights > 0).sum().clamp_min(1)
    return (bce * weights).sum() / counted


def unet_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
              dice_weight: float = 0.0, distance: bool = False) -> torch.Tensor:
    """Weighted cross-entropy, plus ``dice_weight`` times the soft Dice loss; with
    ``distance``, ``target`` is packed (:func:`napari_unet.targets.pack_distance`) and the
    last channel of ``logits`` regresses the distance map."""
    loss = 0.0
    if distance:
        from .targets import unpack_distance

        target, dist = unpack_distance(target)
        loss = distance_loss(logits[:, -1], dist, weights)
        logits = logits[:, :-1]
    loss = loss + weighted_cross_entropy(logits, target, weights)
    if dice_weight > 0:
        loss = loss + dice_weight * soft_dice(logits, target, weights > 0)
    return loss
