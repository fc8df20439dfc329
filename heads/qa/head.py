"""Extractive question answering: a start and an end score for every context token.

The head sees `context_mask` [n, T] (1 on the window's context tokens); position 0 ([CLS]) stands for
"no answer". Per window it decodes the best spans (start <= end, at most `max_answer_tokens` long)
with their probabilities, and the no-answer probability; the QA codec picks the best over all windows
and maps tokens back to characters.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..base import ExtraInput, Head, HeadConfig, HeadOptions

CONTEXT_MASK = ExtraInput("context_mask", pad=0, per_token=True)  # 1 on the window's context tokens


class QAOptions(HeadOptions):
    max_answer_tokens: int = Field(30, ge=1, description="longest answer considered, in sub-word tokens")
    doc_stride: int = Field(64, ge=1, description="tokens shared by consecutive windows of a long context")
    allow_no_answer: bool = Field(
        False, description="answer 'no answer' when [CLS] beats every span (SQuAD 2.0 style data)")
    top_k: int = Field(20, ge=1, description="start and end candidates per window")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class QAConfig(QAOptions, HeadConfig):
    pass


class QAHead(Head):
    kind = "qa"
    needs_labels = False
    options_class = QAOptions
    config_class = QAConfig
    config: QAConfig

    def __init__(self, config: QAConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden_size, 2)

    def extra_inputs(self) -> tuple[ExtraInput, ...]:
        return (CONTEXT_MASK,)

    def predict(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.out(self.dropout(features["last_hidden_state"])).float()  # [n, T, 2]
        allowed = features[CONTEXT_MASK.name].bool()
        allowed[:, 0] = True  # [CLS]: no answer in this window
        logits = logits.masked_fill(~allowed.unsqueeze(-1), torch.finfo(logits.dtype).min)
        return {"logits": logits, "start": logits[..., 0], "end": logits[..., 1], "allowed": allowed}

    def targets(self, raw_labels: list[Any]) -> torch.Tensor:
        """(start token, end token) per window; (0, 0) where the answer is not in the window."""
        return torch.tensor([[int(s), int(e)] for s, e in raw_labels], dtype=torch.long)

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        return (F.cross_entropy(outputs["start"], targets[:, 0]) + F.cross_entropy(outputs["end"], targets[:, 1])) / 2

    def decode(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Per window: best spans [(start, end, probability)], best first, and the no-answer probability."""
        # on the CPU, detached: the lists below read single values (on a GPU each read would sync)
        start_log, end_log = (outputs[key].detach().float().log_softmax(-1).cpu() for key in ("start", "end"))
        allowed = outputs["allowed"].cpu()
        k = min(self.config.top_k, start_log.shape[1])
        (s_score, s), (e_score, e) = start_log.topk(k), end_log.topk(k)  # [n, k] each
        # all (start, end) pairs of every window at once, start-major like nested loops (k * k Python steps were slow)
        s, e = s.unsqueeze(2), e.unsqueeze(1)
        valid = (0 < s) & (s <= e) & (e < s + self.config.max_answer_tokens)
        valid &= allowed.gather(1, s.squeeze(2)).unsqueeze(2) & allowed.gather(1, e.squeeze(1)).unsqueeze(1)
        probs = (s_score.unsqueeze(2) + e_score.unsqueeze(1)).exp().masked_fill(~valid, -1.0).flatten(1)
        ranked = probs.sort(dim=1, descending=True, stable=True).indices[:, : self.config.top_k]
        no_answer = (start_log[:, 0] + end_log[:, 0]).exp().tolist()
        starts, ends, scores, order = s.squeeze(2).tolist(), e.squeeze(1).tolist(), probs.tolist(), ranked.tolist()
        return [
            {"spans": [(starts[r][i // k], ends[r][i % k], scores[r][i]) for i in order[r] if scores[r][i] >= 0.0],
             "no_answer": no_answer[r]}
            for r in range(len(order))
        ]
