"""Per-position classification loss with the class-imbalance options: class weights and focal loss."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None,
                        focal_gamma: float = 0.0, ignore_index: int = -100) -> torch.Tensor:
    """Cross entropy, optionally class-weighted and/or focal (`(1 - p_t)^gamma`, Lin et al. 2017).

    With weights it is the weighted mean torch's `cross_entropy(weight=...)` computes; with gamma = 0
    and no weights it is plain cross entropy. A batch without a single target (rows with no word or no
    span) gives 0, not the NaN of a mean over nothing.
    """
    logits, targets = logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)
    valid = targets != ignore_index
    if class_weights is None and not focal_gamma:
        # sum / count (at least 1) rather than "mean": no NaN, and no host sync to test for emptiness
        return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum") / valid.sum().clamp(min=1)
    safe = targets.clamp(min=0)
    log_p = F.log_softmax(logits, dim=-1).gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = -log_p
    if focal_gamma:
        loss = loss * (1.0 - log_p.exp()).pow(focal_gamma)
    weights = class_weights.to(logits.device)[safe] if class_weights is not None else torch.ones_like(loss)
    weights = weights * valid
    return (loss * weights).sum() / weights.sum().clamp(min=1e-12)
