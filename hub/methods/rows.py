"""What every method's per-row serving hook shares: hooks registered once per layer, and `rows(...)`, which makes
the running pass's plan (each row's own adapter) for the hooks to read."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import nn

from .base import linear_layer

T = TypeVar("T")
Weights = TypeVar("Weights")


def distinct_rows(adapters: Sequence[T | None]) -> tuple[list[T | None], list[int]]:
    """(distinct adapters in first-seen order, by identity; per row, the position of its adapter among them)."""
    positions: dict[int, int] = {}
    order: list[T | None] = []
    rows = []
    for adapter in adapters:
        key = id(adapter)
        if key not in positions:
            positions[key] = len(order)
            order.append(adapter)
        rows.append(positions[key])
    return order, rows


def opaque(hook: Callable[..., Any]) -> Callable[..., Any]:
    """`hook` run eagerly inside a compiled backbone (hub.compiled): a graph break, so the pass's plan, Python objects
    made anew every pass, is never traced and guarded on (which would compile again in every pass). Eager passes
    call it as it is. A method whose hook reads only tensors from its plan is traced (`LayerHooks.traceable`)."""
    return torch._dynamo.disable(hook)


class LayerHooks(Generic[Weights]):
    """Forward hooks on one backbone's layers, active only inside `rows(...)`. The caller serializes passes
    (Backbone.lock): the running pass's plan is an attribute. A method says which layers (`targets`) an adapter
    needs, what each layer's hook does (`hook`) and what a pass plans (`plan`).

    A method's hooks are `opaque` inside a compiled backbone unless it is `traceable`: its hooks then read only
    tensors from the plan, and a compiled pass asks for `plan_every_layer`, so that the traced graph is the same
    whatever the pass's mix of adapters (it is guarded on the plan's form: which layers it covers). `untrace` makes
    them opaque, for a backbone that serves an untraceable method beside it."""

    traceable: ClassVar[bool] = False

    def __init__(self, model: nn.Module):
        self.model = model
        self._hooks: dict[Hashable, tuple[nn.Linear, Any]] = {}  # target -> (its layer, the hook's handle)
        self._layers: dict[str, nn.Linear | None] = {}  # path -> layer, looked up once
        self.hooked_paths: frozenset[Any] = frozenset()  # replaced, never mutated: safe to read without the lock
        self._plan: Any = None
        self.traced = self.traceable  # whether the hooks are traced in a compiled backbone (see `untrace`)

    def targets(self, adapter: Weights) -> set[Any]:
        """What `adapter` needs hooked: its layers' paths (a method may key them further)."""
        return set(adapter.paths)  # type: ignore[attr-defined]

    def target_layer(self, path: str) -> nn.Linear | None:
        """The linear layer at `path` (inside a PEFT wrapper if the model has one), or None."""
        if path not in self._layers:
            self._layers[path] = linear_layer(self.model, path)
        return self._layers[path]

    def needs_prepare(self, adapter: Weights) -> bool:
        """Whether `adapter` needs a hook no earlier adapter did (a lock-free read)."""
        return bool(self.targets(adapter) - self.hooked_paths)

    def prepare(self, adapter: Weights) -> None:
        """Hook what `adapter` needs that no earlier adapter did (the caller holds Backbone.lock)."""
        for target in self.targets(adapter) - self.hooked_paths:
            path = target[0] if isinstance(target, tuple) else target
            layer = self.target_layer(path)
            if layer is None:
                raise ValueError(f"{adapter.name}: {path!r} is not a linear layer of this backbone")  # type: ignore[attr-defined]
            self._hooks[target] = (layer, self.register(layer, target))
        self.hooked_paths = frozenset(self._hooks)

    def hooked_features(self) -> dict[Any, tuple[int, int]]:
        """Each hooked target's layer's in and out features."""
        return {target: (layer.in_features, layer.out_features) for target, (layer, _) in self._hooks.items()}

    def register(self, layer: nn.Linear, target: Any) -> Any:
        """Put the hook for `target` on `layer` (default: a forward hook on its output)."""
        hook = self.hook(target)
        return layer.register_forward_hook(hook if self.traced else opaque(hook))

    def untrace(self) -> None:
        """Make the hooks `opaque`, those registered already too (the caller holds Backbone.lock). Beside another
        method's opaque hooks, which break the compiled graph, traced hooks would be compiled as frames of their own:
        once per layer and per form of a pass."""
        if not self.traced:
            return
        self.traced = False
        for target, (layer, handle) in self._hooks.items():
            handle.remove()
            self._hooks[target] = (layer, self.register(layer, target))

    def hook(self, target: Any) -> Callable[..., Any]:
        raise NotImplementedError

    def plan(self, adapters: list[Weights | None], positions: list[int]) -> Any:
        """What the hooks of one pass read: from its distinct adapters and each row's position among them."""
        raise NotImplementedError

    def plan_every_layer(self, adapters: list[Weights | None], positions: list[int]) -> Any:
        """A traced method's plan for a compiled pass: every hooked layer covered (zeros where no row's adapter has
        it), even when no row has an adapter of this method."""
        raise NotImplementedError

    @contextmanager
    def rows(self, adapters: Sequence[Weights | None], every_layer: bool = False) -> Iterator[None]:
        """Within this block, a pass over len(adapters) rows gives row i the adapter adapters[i] (None: none).
        `every_layer`: the pass runs through a compiled backbone (a method whose hooks are `traced` plans every
        hooked layer)."""
        order, positions = distinct_rows(adapters)
        every_layer = every_layer and self.traced and bool(self.hooked_paths)
        if all(a is None for a in order) and not every_layer:
            yield
            return
        if torch.is_grad_enabled():
            raise RuntimeError(f"{type(self).__name__}.rows serves inference only (outputs changed in place); use "
                               "torch.inference_mode()")
        self._plan = self.plan_every_layer(order, positions) if every_layer else self.plan(order, positions)
        try:
            yield
        finally:
            self._plan = None

    def check_rows(self, count: int, expected: int) -> None:
        if count != expected:
            raise RuntimeError(f"{type(self).__name__}: a pass over {count} rows inside rows() for {expected}")
