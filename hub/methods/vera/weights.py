"""A VeRA folder's per-layer vectors (checked against the backbone, kept in one buffer) and the key of the shared
projections they scale."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch

from ...errors import AdapterError
from ..base import PEFT_WEIGHTS
from ..packed import PackedTensors, interned, read_float_tensors, refuse_options

if TYPE_CHECKING:
    from ...backbone import Backbone

LAMBDA_KEY = re.compile(r"base_model\.model\.(.+)\.vera_lambda_([bd])")
PROJECTION_KEYS = {"base_model.vera_A": "A", "base_model.vera_B": "B"}  # present when saved with save_projection
UNSERVED_OPTIONS = ("fan_in_fan_out", "modules_to_save")


class Projection(NamedTuple):
    """What fixes a shared pair of projections: A [r, in_features], B [out_features, r] drawn from `seed`."""

    rank: int
    seed: int
    in_features: int  # the widest input among the targeted layers (each layer uses the first columns)
    out_features: int  # the widest output (each layer uses the first rows)


def projection_matrices(projection: Projection) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair PEFT draws for this key (its own initialiser, so regenerated pairs equal what it trained with)."""
    from peft.tuners.vera.model import _kaiming_init

    generator = torch.Generator(device="cpu").manual_seed(projection.seed)
    down = _kaiming_init((projection.rank, projection.in_features), generator=generator)
    up = _kaiming_init((projection.out_features, projection.rank), generator=generator)
    return down, up


@dataclass(eq=False, frozen=True, slots=True)
class VeraWeights:
    """One VeRA adapter: per targeted layer lambda_d [r] and lambda_b [out]; the projections live on the backbone."""

    method: ClassVar[str] = "vera"
    name: str
    vectors: PackedTensors  # "<path>.d" -> [r], "<path>.b" -> [out]
    projection: Projection
    paths: Collection[str]

    @property
    def nbytes(self) -> int:
        return self.vectors.nbytes

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> VeraWeights:
        moved = self.vectors.to(device, dtype or self.vectors.buffer.dtype)
        return self if moved is self.vectors else VeraWeights(self.name, moved, self.projection, self.paths)


def load_vera(name: str, folder: Path, config: dict[str, Any], backbone: Backbone) -> VeraWeights:
    """The folder's vectors, once every one fits a linear layer of `backbone` and the config's rank, and a stored
    projection (if any) equals the one its seed gives."""
    refuse_options(folder, config, UNSERVED_OPTIONS, "VeRA")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{folder}: VeRA option bias={config['bias']!r} is not served; retrain without it.")
    rank, seed = config.get("r"), config.get("projection_prng_key", 0)
    if not isinstance(rank, int) or rank < 1 or not isinstance(seed, int):
        raise AdapterError(f"{folder}: adapter_config.json needs an integer r >= 1 and projection_prng_key; "
                           f"found r={rank!r}, projection_prng_key={seed!r}. Retrain or re-download the adapter.")
    tensors = read_float_tensors(folder / PEFT_WEIGHTS)
    stored = {PROJECTION_KEYS[key]: tensors.pop(key) for key in list(tensors) if key in PROJECTION_KEYS}
    vectors: dict[str, torch.Tensor] = {}
    widest = [0, 0]
    for key, tensor in tensors.items():
        match = LAMBDA_KEY.fullmatch(key)
        if not match:
            raise AdapterError(f"{folder}: tensor {key} is not a VeRA vector (vera_lambda_b / vera_lambda_d), which is "
                               "all the router applies; retrain the adapter with `hub train`.")
        path, which = match.groups()
        layer = backbone.linear_layer(path)
        if layer is None:
            raise AdapterError(f"{folder}: tensor {key} targets {path!r}, which is not a linear layer of this "
                               "backbone.")
        expected = (rank,) if which == "d" else (layer.out_features,)
        if tuple(tensor.shape) != expected:
            raise AdapterError(f"{folder}: tensor {key} has shape {list(tensor.shape)}, this backbone and r={rank} "
                               f"need {list(expected)}; retrain the adapter on this backbone.")
        vectors[f"{path}.{which}"] = tensor
        widest = [max(widest[0], layer.in_features), max(widest[1], layer.out_features)]
    paths = sorted({key.rsplit(".", 1)[0] for key in vectors})
    lonely = [path for path in paths if f"{path}.d" not in vectors or f"{path}.b" not in vectors]
    if lonely:
        raise AdapterError(f"{folder}: layer(s) {', '.join(lonely)} have only one of vera_lambda_b / vera_lambda_d; "
                           "the file is incomplete. Retrain or re-download it.")
    projection = Projection(rank, seed, *widest)
    if stored:
        _check_stored(folder, stored, projection)
    return VeraWeights(name, PackedTensors.pack(vectors, backbone.dtype), projection, interned(frozenset(paths)))


def _check_stored(folder: Path, stored: dict[str, torch.Tensor], projection: Projection) -> None:
    """A folder saved with its projections is served from the seed's: refuse it unless they are the same."""
    down, up = projection_matrices(projection)
    for which, expected in (("A", down), ("B", up)):
        found = stored.get(which)
        if found is None or found.shape != expected.shape or not torch.allclose(found.float(), expected, atol=1e-6):
            raise AdapterError(f"{folder}: the stored projection vera_{which} is not the one "
                               f"projection_prng_key={projection.seed} gives for these layers; the router serves VeRA "
                               "from the shared seed. Retrain with `hub train` (projections are not saved).")
