"""Per-row LoRA for mixed-task batches: every row of ONE backbone pass gets its own task's adapter.

Forward hooks, not PEFT, at serving time: faster mixed passes and adapter loads (benchmarks/serving.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..rows import LayerHooks
from .quantized_file import matrix_at
from .weights import LoraWeights

Features = dict[str, tuple[int, int]]  # module path -> (in, out) features of a LoRA layer
ZERO_RANK = 2  # the rank of a layer's zeros when no adapter of the pass has it: not 1, which compiled graphs specialize


@dataclass(frozen=True)
class Zeros:
    """What a layer's stand-in zeros are made of (an int8 backbone has no float weight to take them from)."""

    dtype: torch.dtype
    device: torch.device


class _Plan:
    """One forward pass: for each layer an adapter of the pass updates, the pass's distinct adapters' matrices
    stacked ([adapters, r, in] and [adapters, out, r]), and each row's index among them; a layer's hook gathers its
    rows' own with two index_selects (a Python loop over the rows, which the CPU used to take, measured no faster
    there and was host-bound on a GPU).

    Each distinct adapter is widened for the pass (an int8/int4 or narrower float adapter dequantized into the served
    dtype; BatchedLora keeps recent widened copies). Adapters of one layout are stacked once and each layer's stacks
    are views of that; adapters of different layouts (ranks, layers) are stacked layer by layer, zero-padded to the
    largest rank (zero rows and columns add nothing), with zeros for an adapter without the layer.

    The hooks read only tensors from here (`stacks`, `index`), so a compiled backbone traces them (hub.compiled). Its
    passes plan `every_layer` (each hooked layer, zeros where no adapter of the pass has it, even with no adapter
    at all): the graph is then guarded on the same layers in every pass, never on which adapters the rows have."""

    def __init__(self, adapters: list[LoraWeights | None], positions: list[int],
                 widen: Callable[[LoraWeights], LoraWeights] = LoraWeights.widened,
                 every_layer: tuple[Features, Zeros] | None = None):
        """`widen`: how an adapter is widened (BatchedLora's keeps recent widened copies: `WidenedCache`)."""
        wide = [widen(a) if a is not None else None for a in adapters]
        features, zeros = every_layer or _own_layers(wide)
        self.index = torch.tensor(positions, device=zeros.device)  # row -> its adapter's stack position
        first = wide[0]
        self.stacks: dict[str, tuple[torch.Tensor, torch.Tensor]] = (  # path -> (downs, ups)
            _views_of_one_stack(wide) if _one_layout(wide) and first and first.paths == features.keys()
            else _stacked_by_layer(wide, features, zeros))

    def gathered(self, path: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Each row's own [rows, r, in] and [rows, out, r] for the layer at `path`; None if the plan has no such
        layer."""
        stacks = self.stacks.get(path)
        if stacks is None:
            return None
        return stacks[0].index_select(0, self.index), stacks[1].index_select(0, self.index)


def _own_layers(adapters: list[LoraWeights | None]) -> tuple[Features, Zeros]:
    """The layers the adapters have (in first-seen order), and zeros like theirs."""
    present = [a for a in adapters if a is not None]
    features = {path: (slot.in_features, slot.out_features) for a in present for path, slot in a.layout.slots.items()}
    return features, Zeros(present[0].dtype, present[0].buffer.device)


def _one_layout(adapters: list[LoraWeights | None]) -> bool:
    """Whether every adapter is there and all share one layout and dtype (then one stack of their buffers serves)."""
    first = adapters[0]
    return first is not None and all(a is not None and a.layout is first.layout and a.buffer.dtype == first.buffer.dtype
                                     for a in adapters)


def _views_of_one_stack(adapters: list[LoraWeights | None]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Adapters of one layout (`_one_layout`): their buffers stacked once, each layer's matrices views of it."""
    buffers = [a.buffer for a in adapters if a is not None]  # _one_layout: none left out
    stacked = torch.stack(buffers)
    layout = adapters[0].layout  # type: ignore[union-attr]
    return {path: (matrix_at(stacked, slot.down_start, slot.rank, slot.in_features),
                   matrix_at(stacked, slot.up_start, slot.out_features, slot.rank))
            for path, slot in layout.slots.items()}


def _stacked_by_layer(adapters: list[LoraWeights | None], features: Features,
                      zeros: Zeros) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The layers in `features`, each with the adapters' matrices stacked, padded to the largest rank, zeros for
    an adapter without the layer."""
    stacks = {}
    for path, (in_features, out_features) in features.items():
        ranks = [a.layout.slots[path].rank for a in adapters if a is not None and path in a.layout.slots]
        rank = max(ranks, default=ZERO_RANK)
        downs, ups = [], []
        for adapter in adapters:
            if adapter is None or path not in adapter.layout.slots:
                downs.append(torch.zeros(rank, in_features, dtype=zeros.dtype, device=zeros.device))
                ups.append(torch.zeros(out_features, rank, dtype=zeros.dtype, device=zeros.device))
                continue
            down, up = adapter.down(path), adapter.up(path)
            pad = rank - down.shape[0]
            downs.append(nn.functional.pad(down, (0, 0, 0, pad)) if pad else down)
            ups.append(nn.functional.pad(up, (0, pad)) if pad else up)
        stacks[path] = (torch.stack(downs), torch.stack(ups))
    return stacks


WIDENED_CACHE_BYTES = 64 * 2**20  # about 100 all-layer rank-8 MiniLM adapters widened to bfloat16, 50 to float32


class WidenedCache:
    """The widened copies of the narrow (int8, int4, float16-in-float32) adapters served most recently, up to
    `max_bytes` in all, least recently used dropped first: a hot adapter is dequantized once, not in every pass (a
    request set of 256 texts runs 4 passes; widening 16 int4 adapters in each was 3% of the serving time). Resident
    adapters stay as stored; only this bounded working set is wide. The caller serializes access (Backbone.lock)."""

    def __init__(self, max_bytes: int = WIDENED_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.nbytes = 0
        # id(adapter) -> (adapter, its widened copy): the adapter is held so its id cannot be reused while cached
        self._entries: OrderedDict[int, tuple[LoraWeights, LoraWeights]] = OrderedDict()

    def __call__(self, adapter: LoraWeights) -> LoraWeights:
        if adapter.scales is None:
            return adapter  # nothing to widen
        entry = self._entries.get(id(adapter))
        if entry is not None:
            self._entries.move_to_end(id(adapter))
            return entry[1]
        wide = adapter.widened()
        if wide.nbytes <= self.max_bytes:
            self._entries[id(adapter)] = (adapter, wide)
            self.nbytes += wide.nbytes
            while self.nbytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.nbytes -= dropped.nbytes
        return wide


class BatchedLora(LayerHooks[LoraWeights]):
    """Forward hooks on one backbone's LoRA-targeted linear layers; active only inside `rows(...)`. Traced inside a
    compiled backbone (`traceable`: see _Plan)."""

    traceable = True

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.widened = WidenedCache()
        self._zeros: Zeros | None = None

    def prepare(self, adapter: LoraWeights) -> None:
        super().prepare(adapter)
        self._zeros = self._zeros or Zeros(adapter.dtype, adapter.buffer.device)

    def plan(self, adapters: list[LoraWeights | None], positions: list[int]) -> _Plan:
        return _Plan(adapters, positions, widen=self.widened)

    def plan_every_layer(self, adapters: list[LoraWeights | None], positions: list[int]) -> _Plan:
        assert self._zeros is not None  # LayerHooks.rows asks only once a layer is hooked
        plan = _Plan(adapters, positions, widen=self.widened, every_layer=(self.hooked_features(), self._zeros))
        for stacks in plan.stacks.values():  # the number of adapters: a compiled graph must not specialize it on 1
            for tensor in stacks:
                torch._dynamo.decorators.mark_unbacked(tensor, 0)
        return plan

    def hook(self, path: str):
        def add_row_updates(layer: nn.Linear, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            plan = self._plan
            if plan is None:
                return None
            matrices = plan.gathered(path)
            if matrices is None:
                return None
            down, up = matrices
            x = args[0]
            rows = x.shape[0]
            self.check_rows(rows, plan.index.shape[0])
            # per-row bmm with A @ x^T: the fastest form measured on CPU
            low = torch.bmm(down, x.reshape(rows, -1, x.shape[-1]).transpose(1, 2)).transpose(1, 2)
            if torch.compiler.is_compiling():  # out of place: inductor fuses the add into what reads the output
                return output + torch.bmm(low, up.transpose(1, 2)).view_as(output)
            output.view(rows, -1, output.shape[-1]).baddbmm_(low, up.transpose(1, 2))  # in place: fastest eagerly
            return output

        return add_row_updates
