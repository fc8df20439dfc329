"""The one contract every head kind honours, so the router and the trainer never special-case a kind.

A head receives the frozen backbone's outputs for its own rows as a features dict
(`last_hidden_state` [n, T, H], `attention_mask` [n, T], `pooler_output` [n, H], `hidden_states`
[n, layers + 1, T, H] when its `layers` option needs them, and its codec's extra inputs) and:
- `forward(features) -> outputs` (tensors, at least `logits`): picks the layers, then the kind's `predict`,
- `loss(outputs, targets) -> scalar`, with `targets(raw_labels)` turning data-set labels into tensors,
- `decode(outputs) -> list[dict]`, one user-facing result per row,
- `save(folder, storage)` / `Head.load(folder)`: `head_config.json` + `head.safetensors` (float32, float16 or int8:
  heads/storage.py),
- `extra_inputs()`: the per-row inputs beside the backbone's outputs that its kind's codec builds.

Serving may answer rows of several heads at once: heads whose `batch_key()` is equal (not None) give
the same results through their class's `forward_many` / `decode_many` as one by one (rows of many tasks,
one set of kernels instead of one per task; benchmarks/serving.py --device cuda measured why).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .resident import keep_as_stored
from .storage import HeadStorage, HeadStorageError, dequantized, stored_tensors

CONFIG_FILE = "head_config.json"
WEIGHTS_FILE = "head.safetensors"


class HeadLoadError(ValueError):
    """A head folder that cannot be turned back into the head it claims to be."""


@dataclass(frozen=True)
class ExtraInput:
    """A per-row input a head reads beside the backbone's outputs; its kind's codec fills it under this name."""

    name: str
    pad: int  # the value that pads a shorter row
    per_token: bool = False  # one value per token of the row: padded to the batch's token width


class HeadOptions(BaseModel):
    """What a user may set for a head in registry.yaml (`head:`); kinds extend it."""

    model_config = ConfigDict(extra="forbid")
    layers: Literal["last", "last4", "mix"] = Field(
        "last", description=("token vectors from the last layer, the mean of the last four, "
                             "or a learned softmax-weighted mix of all"))


class HeadConfig(HeadOptions):
    """Options plus what the hub fills in: the kind, the backbone's width, the labels."""

    kind: str
    hidden_size: int = Field(ge=1)
    num_layers: int | None = Field(
        None, ge=0, description="the backbone's transformer layers (filled in when the head is built)")
    labels: list[str] | None = None

    @model_validator(mode="after")
    def _enough_layers(self) -> HeadConfig:
        needed = {"last": 0, "last4": 4, "mix": 1}[self.layers]
        if self.num_layers is not None and self.num_layers < needed:
            raise ValueError(
                f"layers: {self.layers} needs a backbone with at least {needed} layers (num_layers={self.num_layers})")
        return self


class Head(nn.Module):
    kind: ClassVar[str]
    needs_labels: ClassVar[bool]
    options_class: ClassVar[type[HeadOptions]]
    config_class: ClassVar[type[HeadConfig]]

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.class_weights: torch.Tensor | None = None  # training-only loss options, never saved
        self.focal_gamma = 0.0
        if config.layers != "last" and config.num_layers is None:
            raise ValueError(f"layers: {config.layers} needs the backbone's layer count (num_layers)")
        if config.layers == "mix":  # ELMo's scalar mix: softmax weights over embeddings + every layer, and a scale
            assert config.num_layers is not None  # checked above
            self.layer_weights = nn.Parameter(torch.zeros(config.num_layers + 1))
            self.layer_scale = nn.Parameter(torch.ones(()))

    @property
    def needs_all_layers(self) -> bool:
        return self.config.layers != "last"

    def bind(self, backbone: nn.Module, special_token_ids: Sequence[int] = ()) -> None:
        """Called when the head is loaded beside `backbone` (its transformers model) and its tokenizer's special token
        ids, for heads that reuse backbone weights beyond its outputs (fill-mask's decoder is the word embeddings, and
        it never answers [UNK] or [PAD]); ValueError when they do not fit."""

    def embedding_additions(self, extras: dict[str, torch.Tensor], width: int) -> torch.Tensor | None:
        """What this head adds to its rows' input embeddings ([n, width, H]; `extras` collated to `width` tokens), or
        None (most heads): relation's `position` method marks the entities in the embedding layer this way."""
        return None

    def extra_inputs(self) -> tuple[ExtraInput, ...]:
        """What this head reads beyond the backbone's outputs (the codec's rows carry exactly these)."""
        return ()

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pick the token vectors the options ask for, then `predict`."""
        if self.config.layers == "last":
            return self.predict(features)
        return self.predict({**features, "last_hidden_state": self.layer_tokens(features)})

    def layer_tokens(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """[n, T, H]: the token vectors `layers` picks: the last layer, the mean of the last four or the learned mix."""
        if self.config.layers == "last":
            return features["last_hidden_state"]
        layers = features["hidden_states"]  # [n, layers + 1, T, H]
        if self.config.layers == "last4":
            return layers[:, -4:].mean(1)
        weights = self.layer_weights.softmax(0).to(layers.dtype)
        return self.layer_scale * torch.einsum("l,nlth->nth", weights, layers)

    def predict(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def configure_loss(self, class_weights: torch.Tensor | None = None, focal_gamma: float = 0.0) -> None:
        """Class-imbalance options of the loss; heads whose loss cannot take them refuse clearly."""
        if class_weights is not None or focal_gamma:
            raise ValueError(
                f"class_weights / focal_gamma apply to softmax classification and tagging heads, not to {self.kind!r}")

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def targets(self, raw_labels: list[Any]) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """One result per row. Heads with a `decode_many` decode their own rows through it; others override this."""
        return self.decode_many([self], [0] * len(outputs["logits"]), outputs)

    def batch_key(self) -> tuple | None:
        """Equal keys: these heads can serve their rows together (`forward_many`); None: one head at a time."""
        return None

    @classmethod
    def forward_many(cls, heads: list[Head], owner: torch.Tensor,
                     features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inference outputs of rows owned by different heads of one batch key (`owner[i]` indexes `heads`)."""
        raise NotImplementedError

    @classmethod
    def decode_many(cls, heads: list[Head], owner: list[int], outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """`decode` for rows of `forward_many`, each with its own head's labels."""
        raise NotImplementedError

    @classmethod
    def expand_labels(cls, labels: list[str] | None, options: dict[str, Any]) -> list[str] | None:
        """The head's output labels for the registry's `labels` (tagging turns entity types into tags)."""
        return labels

    def derived_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors the head derives from its config rather than saves (default: its non-persistent buffers)."""
        saved = self.state_dict()
        return {name: buffer for name, buffer in self.named_buffers() if name not in saved}

    def upgrade_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A weights file in a layout an earlier version of this head saved, in today's (default: unchanged)."""
        return weights

    @classmethod
    def from_options(cls, options: dict[str, Any], hidden_size: int, labels: list[str] | None,
                     num_layers: int | None = None) -> Head:
        config = cls.config_class.model_validate(
            {**options, "kind": cls.kind, "hidden_size": hidden_size, "num_layers": num_layers, "labels": labels})
        return cls(config)

    def save(self, folder: Path, storage: HeadStorage = "float32") -> None:
        """Write config and weights into `folder` (the adapter store makes the folder write atomic); float tensors are
        stored as `storage` says (heads/storage.py; `load` reads them back into the head's float32)."""
        folder = Path(folder)
        (folder / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2), encoding="utf-8")
        tensors, metadata = stored_tensors(self.state_dict(), storage)
        save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"kind": self.kind, **metadata})

    @staticmethod
    def load(folder: Path, resident: bool = False) -> Head:
        """Rebuild the head `save` wrote into `folder`, checking kind, config and every tensor's name, shape and
        finiteness. `resident` (serving): narrow tensors stay in memory as the file stores them (heads/resident.py)."""
        from .kind import KINDS  # the kinds register after this module is imported

        folder = Path(folder)
        raw = _read_config(folder)
        found = KINDS.get(str(raw.get("kind")))
        if found is None:
            raise HeadLoadError(
                f"{folder / CONFIG_FILE}: unknown head kind {raw.get('kind')!r}; known: {', '.join(sorted(KINDS))}")
        head_class = found.head
        try:
            head = head_class(head_class.config_class.model_validate(raw))
        except ValueError as exc:
            raise HeadLoadError(f"{folder / CONFIG_FILE}: invalid config: {exc}") from None
        try:
            with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as file:
                metadata, stored = file.metadata(), {name: file.get_tensor(name) for name in file.keys()}
        except Exception as exc:
            raise HeadLoadError(f"cannot read {folder / WEIGHTS_FILE} as safetensors: {exc}") from None
        try:
            weights = dequantized(stored, metadata)
        except HeadStorageError as exc:
            raise HeadLoadError(f"{folder / WEIGHTS_FILE}: {exc}") from None
        expected = head.state_dict()
        weights = head.upgrade_weights(_without_derived(head, weights, folder / WEIGHTS_FILE))
        if set(weights) != set(expected):
            raise HeadLoadError(
                f"{folder / WEIGHTS_FILE}: tensors {sorted(set(weights) ^ set(expected))} do not match a "
                f"{head.kind} head with this config"
            )
        for name, tensor in weights.items():
            if tensor.shape != expected[name].shape:
                raise HeadLoadError(
                    f"{folder / WEIGHTS_FILE}: tensor {name!r} has shape {tuple(tensor.shape)}, the config needs "
                    f"{tuple(expected[name].shape)} (labels or hidden size changed?)"
                )
            finite = torch.isfinite(tensor)
            if not finite.all():  # NaN or inf would be served as `score: nan`
                raise HeadLoadError(f"{folder / WEIGHTS_FILE}: tensor {name} holds "
                                    f"{finite.numel() - int(finite.sum())} NaN/inf values")
        head.load_state_dict(weights)
        if resident:
            keep_as_stored(head, stored)
        return head.eval()


def _without_derived(head: Head, weights: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """`weights` less the tensors the head derives from its config (files written before they stopped being saved
    hold them); a stored one that differs from the derived is refused: the file and its config disagree."""
    derived = head.derived_tensors()
    for name in derived.keys() & weights.keys():
        if not torch.equal(weights[name].to(derived[name].dtype), derived[name]):
            raise HeadLoadError(f"{path}: stored {name!r} differs from what the head's config derives; retrain it")
    return {name: tensor for name, tensor in weights.items() if name not in derived}


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except OSError as exc:
        raise HeadLoadError(f"cannot read {folder / CONFIG_FILE}: {exc.strerror}") from None
    except ValueError as exc:
        raise HeadLoadError(f"{folder / CONFIG_FILE} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise HeadLoadError(f"{folder / CONFIG_FILE} is not a JSON object")
    return raw




Pooling = Literal["cls", "pooler", "mean", "max"]


def pool(features: dict[str, torch.Tensor], how: Pooling, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One vector per row: raw [CLS] vector, the backbone's pooler output, or a masked mean/max over tokens.

    `mask` [n, T] picks the tokens of one text of a row (default: the attention mask); `cls` is then
    that text's first token.
    """
    hidden = features["last_hidden_state"]
    if how == "cls":
        if mask is None:
            return hidden[:, 0]
        return hidden[torch.arange(len(hidden), device=hidden.device), mask.float().argmax(1)]
    if how == "pooler":
        if mask is not None:
            raise ValueError("pooling 'pooler' reads the whole row; a siamese pair needs cls, mean or max")
        return features["pooler_output"]
    mask = (features["attention_mask"] if mask is None else mask).unsqueeze(-1).to(hidden.dtype)
    if how == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(1)
