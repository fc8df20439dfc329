"""The model pre-training trains: the frozen backbone with a fresh adapter of any registered method, and the
objective heads; its forward returns the loss a Trainer minimizes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional
from transformers import PreTrainedModel

from heads.fill_mask.head import FillMaskConfig, FillMaskHead

from ..methods import METHODS
from ..methods.base import AdapterOptions
from .collator import EncodedText, MaskingCollator
from .masking import IGNORED
from .objective_heads import NextSentenceHead, SpanBoundaryHead


class PretrainingModel(nn.Module):
    """`backbone` (frozen) with `adapter`'s method injected, BERT's prediction head and, with `span_boundary`,
    SpanBERT's span boundary head. Only the adapter and the heads train; the prediction head's decoder is the
    backbone's own word embeddings."""

    def __init__(self, backbone: PreTrainedModel, adapter: AdapterOptions, span_boundary: bool = False,
                 next_sentence: bool = False, transform_rank: int | None = None):
        super().__init__()
        embeddings = backbone.get_input_embeddings()
        assert isinstance(embeddings, nn.Embedding)  # BERT's word embeddings
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)
        self.encoder = METHODS[adapter.method].training.wrap(backbone, adapter)
        self.mlm = FillMaskHead(FillMaskConfig.model_validate(
            {"kind": FillMaskHead.kind, "hidden_size": embeddings.embedding_dim,
             "vocab_size": embeddings.num_embeddings, "layer_norm_eps": backbone.config.layer_norm_eps,
             "transform_rank": transform_rank}))
        self.mlm.bind(backbone)
        self.sbo = SpanBoundaryHead(embeddings.embedding_dim) if span_boundary else None
        self.nsp = NextSentenceHead(embeddings.embedding_dim) if next_sentence else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                span_rows: torch.Tensor | None = None, span_left: torch.Tensor | None = None,
                span_right: torch.Tensor | None = None, span_offsets: torch.Tensor | None = None,
                span_labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                next_sentence_label: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """loss: masked-LM cross-entropy averaged over the chosen tokens, plus the span boundary objective's over
        the same tokens when the model has it (SpanBERT adds the two), plus next-sentence prediction's over sentence
        pairs when it has that head (BERT's); next_sentence_logits then; logits: the scores at the chosen tokens
        ([chosen, vocab], in reading order), which is all the loss and the accuracy read."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        chosen = labels != IGNORED
        logits = self.mlm.scores(hidden[chosen])
        loss = functional.cross_entropy(logits, labels[chosen])
        if self.sbo is not None and span_rows is not None and span_rows.numel():
            assert span_left is not None and span_right is not None and span_offsets is not None
            assert span_labels is not None  # the collator gives the five together
            boundary = self.mlm.scores(self.sbo(hidden, span_rows, span_left, span_right, span_offsets))
            loss = loss + functional.cross_entropy(boundary, span_labels)
        out = {"logits": logits}
        if self.nsp is not None and next_sentence_label is not None:  # BERT adds the two losses
            out["next_sentence_logits"] = self.nsp(hidden)
            loss = loss + functional.cross_entropy(out["next_sentence_logits"], next_sentence_label)
        return {"loss": loss, **out}


@dataclass(frozen=True)
class HeldOutScore:
    accuracy: float  # the share of chosen tokens whose original token scores highest
    perplexity: float  # exp of the mean cross-entropy at the chosen tokens (masked-token perplexity)
    next_sentence_accuracy: float | None = None  # sentence pairs told apart (next or not), with the NSP head


@torch.no_grad()
def held_out_score(model: PretrainingModel, collator: MaskingCollator, texts: Sequence[EncodedText],
                   batch_size: int = 32) -> HeldOutScore:
    """How well `model` restores the chosen tokens of `texts` masked by `collator` (fix its masker's seed to compare
    models on the same masks)."""
    was_training = model.training
    model.eval()
    right = total = pairs_right = pairs = 0
    loss_sum = 0.0
    for start in range(0, len(texts), batch_size):
        batch = collator(texts[start:start + batch_size])
        out = model(**batch)
        targets = batch["labels"][batch["labels"] != IGNORED]
        right += int((out["logits"].argmax(-1) == targets).sum())
        loss_sum += float(functional.cross_entropy(out["logits"], targets, reduction="sum"))
        total += targets.numel()
        if "next_sentence_logits" in out:
            pairs_right += int((out["next_sentence_logits"].argmax(-1) == batch["next_sentence_label"]).sum())
            pairs += len(batch["next_sentence_label"])
    model.train(was_training)
    return HeldOutScore(right / total if total else 0.0, math.exp(loss_sum / total) if total else math.inf,
                        pairs_right / pairs if pairs else None)
