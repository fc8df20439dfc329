"""Fill-mask: BERT's masked-language-model prediction head, scoring each `[MASK]` against the whole vocabulary.

The head is what `hub pretrain` trains beside a domain adapter (neither embedded backbone ships BERT's trained
prediction head: their files hold the encoder and a pooler, no `cls.predictions.*`). Its decoder is tied to the
backbone's frozen word embeddings, as BERT's is, so the head's own weights are the transform (dense + GELU + layer
norm; the dense layer optionally low-rank, `transform_rank`) and one bias per vocabulary token; `bind` ties the
decoder when the head is loaded beside its backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from ..base import ExtraInput, Head, HeadConfig, HeadOptions
from ..resident import KeepsParametersAsStored

IS_MASK = ExtraInput("is_mask", pad=0, per_token=True)  # 1 at the row's [MASK] tokens
TOP_K = ExtraInput("top_k", pad=0)  # one value: the candidates this row's request asks for
MAX_TOP_K = 100


class FillMaskOptions(HeadOptions):
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="candidates per [MASK] when a request does not say")


class FillMaskConfig(FillMaskOptions, HeadConfig):
    vocab_size: int | None = Field(None, ge=1, description="the backbone's vocabulary (filled in by `hub pretrain`)")
    layer_norm_eps: float = 1e-12
    transform_rank: int | None = Field(
        None, ge=1, description="the transform's dense layer as two of rank r (hidden x r, r x hidden): 2 x hidden x r "
                                "weights instead of hidden x hidden, for a head small beside its backbone "
                                "(`hub pretrain --transform-rank`); None: BERT's full dense layer")

    @model_validator(mode="after")
    def _last_layer(self) -> FillMaskConfig:
        if self.layers != "last":
            raise ValueError("a fill-mask head scores the last layer's vectors, as it was trained; remove 'layers'")
        return self


class FillMaskHead(KeepsParametersAsStored, Head):
    kind = "fill_mask"
    needs_labels = False
    options_class = FillMaskOptions
    config_class = FillMaskConfig
    config: FillMaskConfig
    # served heads keep the vocabulary bias as stored (a quarter of its float32 bytes as int8: most of a low-rank
    # head's), widened in each pass (heads/resident.py)
    kept_as_stored = ("bias",)

    def __init__(self, config: FillMaskConfig):
        super().__init__(config)
        if config.vocab_size is None:
            raise ValueError("a fill-mask head needs vocab_size (the backbone's vocabulary); train it with "
                             "`hub pretrain`")
        hidden, rank = config.hidden_size, config.transform_rank
        dense = [nn.Linear(hidden, hidden)] if rank is None else [nn.Linear(hidden, rank, bias=False),
                                                                   nn.Linear(rank, hidden)]
        self.transform = nn.Sequential(*dense, nn.GELU(), nn.LayerNorm(hidden, eps=config.layer_norm_eps))
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self._decoder: tuple[torch.Tensor, ...] = ()  # the backbone's word embeddings: a tuple, so never saved
        self._never_predict: list[int] = []  # the tokenizer's special tokens, set by `bind`

    def bind(self, backbone: nn.Module, special_token_ids: Sequence[int] = ()) -> None:
        """Tie the decoder to `backbone`'s word embeddings, and never answer the special tokens (a filled [UNK],
        [PAD] or [CLS] says nothing; transformers' fill-mask pipeline answers them); ValueError when the backbone's
        vocabulary is not this head's."""
        embeddings = backbone.get_input_embeddings()  # type: ignore[operator]  # a transformers model's
        assert isinstance(embeddings, nn.Embedding)  # BERT's word embeddings
        if embeddings.num_embeddings != self.config.vocab_size or embeddings.embedding_dim != self.config.hidden_size:
            raise ValueError(f"the fill-mask head was trained over a vocabulary of {self.config.vocab_size} tokens of "
                             f"width {self.config.hidden_size}; this backbone has {embeddings.num_embeddings} of width "
                             f"{embeddings.embedding_dim}: pre-train it again on this backbone")
        self._decoder = (embeddings.weight,)
        vocabulary = embeddings.num_embeddings
        self._never_predict = sorted({int(token) for token in special_token_ids if 0 <= token < vocabulary})

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., hidden] -> [..., vocab] logits against every word embedding, plus the bias."""
        if not self._decoder:
            raise RuntimeError("the fill-mask head is not bound to a backbone: call bind(backbone) first")
        transformed = self.transform(hidden.to(next(self.transform[-1].parameters()).dtype))  # the layer norm's
        return transformed @ self._decoder[0].to(transformed.dtype).T + self.vocabulary_bias().to(transformed.dtype)

    def vocabulary_bias(self) -> torch.Tensor:
        """One score per vocabulary token (float32 even where it is kept as stored)."""
        return self.parameter_value("bias")

    def extra_inputs(self) -> tuple[ExtraInput, ...]:
        return IS_MASK, TOP_K

    def predict(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`logits` [rows, masks, k]: each mask's top candidates' probabilities (k: the largest a row asks; masks:
        the most a row holds; zeros beyond a row's own), `token_ids` the same shape, `mask_count` [rows]."""
        hidden, is_mask = features["last_hidden_state"], features[IS_MASK.name].bool()
        rows = len(hidden)
        counts = is_mask.sum(1)
        width = int(counts.max()) if rows else 0
        answerable = max(int(self.config.vocab_size or 1) - len(self._never_predict), 1)
        k = min(max(int(features[TOP_K.name].max()) if rows else 1, 1), answerable)
        probabilities = torch.zeros(rows, width, k, device=hidden.device)
        token_ids = torch.zeros(rows, width, k, dtype=torch.long, device=hidden.device)
        if width:
            logits = self.scores(hidden[is_mask]).float()
            logits[:, self._never_predict] = float("-inf")  # probabilities over the tokens it may answer
            top = F.softmax(logits, dim=-1).topk(k, dim=-1)
            row, slot = is_mask.nonzero(as_tuple=True)[0], (is_mask.long().cumsum(1) - 1)[is_mask]
            probabilities[row, slot], token_ids[row, slot] = top.values, top.indices
        return {"logits": probabilities, "token_ids": token_ids, "mask_count": counts,
                "top_k": features[TOP_K.name].reshape(rows, -1)[:, 0]}

    def decode(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Per row: each mask's candidates as (token id, probability), as many as the row's request asked."""
        results = []
        for probabilities, ids, count, k in zip(outputs["logits"].tolist(), outputs["token_ids"].tolist(),
                                                outputs["mask_count"].tolist(), outputs["top_k"].tolist()):
            results.append({"masks": [list(zip(ids[m][:k], probabilities[m][:k])) for m in range(count)]})
        return results
