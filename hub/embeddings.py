"""Contextual embeddings served through the router: per-token vectors with character offsets, or one vector per text,
from the frozen backbone alone or through a task's adapter, in the same backbone passes as every other request.

An embedding request is a `(name, text)` pair like any other; its name says what to embed with and how:

    embed:<backbone or task>:<layers>:<pooling>[:unit]

(`embedding_task_name` builds it; registry names cannot hold ':', so it never shadows a task). `hub.embed`, the CLI
and the server's `POST /v1/embeddings` all go through it, so embeddings batch with other tasks' rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch.nn import functional as F

from heads import Codec, Head, HeadConfig, Row, pool
from heads.codec import TEXT_SCHEMA

from .errors import InputError
from .registry import TaskSpec

PREFIX = "embed:"
Layers = Literal["last", "last4", "mix"] | int
Pooling = Literal["tokens", "mean", "cls"]
POOLINGS: tuple[Pooling, ...] = ("tokens", "mean", "cls")
LAYER_CHOICES = ("last", "last4", "mix")


@dataclass(frozen=True)
class EmbeddingRequest:
    """What a name asks for: `target` (a backbone or a task of the registry), which layers, how pooled, unit length."""

    target: str
    layers: Layers = "last"
    pooling: Pooling = "mean"
    unit: bool = False  # pooled vectors scaled to length 1 (what OpenAI's embeddings are)

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.target}:{self.layers}:{self.pooling}" + (":unit" if self.unit else "")


def embedding_task_name(target: str, layers: Layers | str = "last", pooling: str = "mean",
                        unit: bool = False) -> str:
    """The request name for embeddings of `target` (a backbone or task name) with these options (checked here)."""
    return parse_embedding_name(EmbeddingRequest(target, cast(Layers, layers), cast(Pooling, pooling), unit).name).name


def is_embedding_name(name: str) -> bool:
    return name.startswith(PREFIX)


def parse_embedding_name(name: str) -> EmbeddingRequest:
    """The request a name stands for; InputError naming the bad part and the choices."""
    parts = name.removeprefix(PREFIX).split(":")
    if len(parts) not in (3, 4) or not parts[0] or (len(parts) == 4 and parts[3] != "unit"):
        raise InputError(f"{name!r} is not an embedding request name; build one with "
                         "embedding_task_name(target, layers, pooling, unit) or call hub.embed.")
    target, layers, pooling = parts[:3]
    chosen: Layers
    if layers in LAYER_CHOICES:
        chosen = cast(Layers, layers)
    elif layers.lstrip("-").isdigit():
        chosen = int(layers)
    else:
        raise InputError(f"layers={layers!r}: use last, last4 (the mean of the last four), mix (a task head's learned "
                         "mix) or a layer number (0: the embeddings, -1: the last)")
    if pooling not in POOLINGS:
        raise InputError(f"pooling={pooling!r}: use tokens (a vector per token, with offsets), mean or cls")
    return EmbeddingRequest(target, chosen, pooling, len(parts) == 4)


class EmbeddingHead(Head):
    """No weights of its own: picks the layers (`mix` reads a task head's learned weights) and pools."""

    kind = "embedding"
    needs_labels = False

    def __init__(self, request: EmbeddingRequest, hidden_size: int, num_layers: int, mix: Head | None = None):
        layers = request.layers
        if isinstance(layers, int) and not -(num_layers + 1) <= layers <= num_layers:
            raise InputError(f"layers={layers}: the backbone has layers 0 (the embeddings) to {num_layers}")
        if layers == "last4" and num_layers < 4:
            raise InputError(f"layers=last4 averages the last four layers; this backbone has {num_layers}: use last or "
                             "a layer number")
        if layers == "mix" and (mix is None or mix.config.layers != "mix"):
            raise InputError("layers=mix reads the learned layer mix of a task's head: name a task trained with "
                             "head.layers: mix, or use last, last4 or a layer number")
        # last and last4 are Head.layer_tokens' own choices; mix is the task head's, a layer number picked here
        super().__init__(HeadConfig.model_validate({"kind": self.kind, "hidden_size": hidden_size,
                                                    "num_layers": num_layers,
                                                    "layers": "last4" if layers == "last4" else "last"}))
        self.request = request
        self.mix: tuple[Head, ...] = (mix,) if mix is not None else ()  # the task's head; a tuple: not a submodule

    @property
    def needs_all_layers(self) -> bool:
        return self.request.layers != "last"

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`logits`: [rows, tokens, hidden] for pooling=tokens, else [rows, hidden]; `attention_mask` beside."""
        layers = self.request.layers
        if isinstance(layers, int):
            tokens = features["hidden_states"][:, layers]
        else:
            tokens = (self.mix[0] if layers == "mix" else self).layer_tokens(features)
        if self.request.pooling == "tokens":
            return {"logits": tokens, "attention_mask": features["attention_mask"]}
        pooled = pool({**features, "last_hidden_state": tokens}, self.request.pooling)
        return {"logits": F.normalize(pooled, dim=-1) if self.request.unit else pooled}

    def decode(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        vectors = outputs["logits"].float()
        if self.request.pooling != "tokens":
            return [{"embedding": row} for row in vectors.tolist()]
        lengths = outputs["attention_mask"].sum(1).tolist()
        return [{"vectors": row[:length]} for row, length in zip(vectors.tolist(), lengths)]


class EmbeddingCodec(Codec):
    """One text per request, truncated to the window (flagged); tokens keep their character offsets."""

    head: EmbeddingHead

    @classmethod
    def input_schema(cls, inputs: list[str]) -> dict[str, Any]:
        return TEXT_SCHEMA

    @property
    def shared_encoding(self) -> tuple:
        return (EmbeddingCodec, id(self.tokenizer), self.max_length)

    def normalize(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            got = "an empty text" if isinstance(value, str) else type(value).__name__
            raise InputError(f"embeddings take a non-empty text; got {got}.")
        self.check_readable(value, "the text")
        return value

    def encode(self, requests: Sequence[str]) -> list[list[Row]]:
        if not requests:
            return []
        full = self.tokenizer(list(requests), truncation=False, return_offsets_mapping=True,
                              return_special_tokens_mask=True, verbose=False)
        before, after = self.specials
        budget = self.max_length - len(before) - len(after)
        rows = []
        for ids, offsets, special in zip(full["input_ids"], full["offset_mapping"], full["special_tokens_mask"]):
            truncated = len(ids) > self.max_length
            if truncated:  # keep the start of the text, and its closing special tokens
                keep = len(before) + budget
                ids, offsets, special = (ids[:keep] + ids[len(ids) - len(after):],
                                         offsets[:keep] + offsets[len(offsets) - len(after):],
                                         special[:keep] + special[len(special) - len(after):])
            rows.append([Row(ids, [0] * len(ids), meta={"offsets": offsets, "special": special}, truncated=truncated)])
        return rows

    def finish(self, request: str, rows: list[Row], decoded: list[dict[str, Any]]) -> dict[str, Any]:
        row, result = rows[0], decoded[0]
        flag = {"truncated": True} if row.truncated else {}
        if "embedding" in result:
            return {"embedding": result["embedding"], "token_count": len(row.input_ids), **flag}
        tokens = [{"token": token, "start": start, "end": end, "embedding": vector}
                  for token, (start, end), special, vector in
                  zip(self.tokenizer.convert_ids_to_tokens(row.input_ids), row.meta["offsets"], row.meta["special"],
                      result["vectors"]) if not special]
        return {"tokens": tokens, **flag}


def embedding_spec(request: EmbeddingRequest, backbone: str) -> TaskSpec:
    """The entry an embedding request is served under (built, not validated: its kind is not a registry kind)."""
    return TaskSpec.model_construct(name=request.name, backbone=backbone, kind=EmbeddingHead.kind, inputs=["text"],
                                    labels=None, head={}, max_length=None, metric="", description="", example=None)
