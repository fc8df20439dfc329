"""The int8 backbone runtime: every linear layer of the frozen backbone as int8 weights (a float32 scale per output
channel) times int8 activations (a scale per token), multiplied in integers by `torch._int_mm`.

Why own code (measured in benchmarks/backbone_runtimes.py on this CPU): torch.ao's `quantize_dynamic` is fast but
quantizes activations with one scale per batch tensor, so a row's output changes with its batch neighbours (a hub
serving many tasks in one pass must not let one request change another's answer), and it is deprecated; torchao's
int8 dynamic-activation config scales per token but ran slower than float32 here. Per-token scales keep every row
independent of the others: the integer product is exact, and each token's scale reads only that token.
Adapters still add their updates in float32 through the same per-row hooks (the layer keeps `in_features` and
`out_features`, and forward hooks see float32 inputs and outputs). Under autograd the layer passes gradients
straight through its rounding, so adapters can be trained with the int8 backbone in the loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .absmax import quantize_absmax

LEVELS = 127  # symmetric int8: -127..127, so 0 stays exact


class Int8Linear(nn.Linear):
    """A frozen nn.Linear as int8: y = (int8(x / s_x) @ int8(W / s_w)^T) * s_x * s_w + b, s_x per token. Still an
    nn.Linear to the code that finds layers by type (the adapters' hooks); `weight` is the dequantized matrix, built
    on each read (for inspection, not for the pass)."""

    weight_t: torch.Tensor  # [in, out] int8, the transposed layout torch._int_mm takes
    weight_scale: torch.Tensor  # [out] float32

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate a float weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        values, scale = quantize_absmax(linear.weight.detach().float(), LEVELS, rows=True)
        self.register_buffer("weight_t", values.t().contiguous())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        return (self.weight_t.t().float() * self.weight_scale.unsqueeze(1))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and inputs.requires_grad:  # adapters below this layer train through it
            return _StraightThrough.apply(inputs, self)
        return self.integer_forward(inputs)

    def integer_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The int8 product (no gradient: rounding has none)."""
        values, scale = quantize_tokens(inputs.reshape(-1, self.in_features).float())
        output = torch._int_mm(values, self.weight_t).float()  # exact integer accumulation
        output.mul_(scale.unsqueeze(1)).mul_(self.weight_scale)  # in place: a pass allocates the output once
        if self.bias is not None:
            output.add_(self.bias)
        return output.reshape(*inputs.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class _StraightThrough(torch.autograd.Function):
    """The int8 product forward; backward as if it were the float product with the dequantized weight (the
    straight-through estimator: the activations' rounding is passed through), so an adapter trained with an int8
    backbone in the loop gets its gradient through every frozen int8 layer above it."""

    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, layer: Int8Linear) -> torch.Tensor:
        ctx.layer = layer
        return layer.integer_forward(inputs)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output @ ctx.layer.weight.to(grad_output.dtype), None


def quantize_tokens(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 values and a float32 scale per row (token) of `flat` [N, K]: the absmax layout of hub/absmax.py, in
    fewer passes over the activations (max and min instead of a full abs, rounding in place), as every linear
    layer of a pass runs it; an all-zero token keeps scale 1 and stays zero."""
    scale = torch.maximum(flat.amax(dim=1), flat.amin(dim=1).neg_()).div_(LEVELS)
    scale = torch.where(scale > 0, scale, 1.0)
    values = torch.div(flat, scale.unsqueeze(1)).round_().to(torch.int8)  # |x / scale| <= 127 by construction
    return values, scale


def quantize_linear_layers(model: nn.Module) -> int:
    """Replace every nn.Linear of `model` by an Int8Linear in place; returns how many were replaced."""
    replaced = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and not isinstance(module, Int8Linear):
            parent, _, child = name.rpartition(".")
            model.get_submodule(parent).register_module(child, Int8Linear(module))
            replaced += 1
    return replaced
