"""The backbone alone in ONNX Runtime: the references issue 19 sets the hub against.

    float32             torch's ONNX export (`torch.onnx.export`), run by ONNX Runtime
    int8                ONNX Runtime's own `quantize_dynamic` with its defaults (int8 weights per tensor, activations
                        quantized with ONE scale per batch tensor): the fastest here, but a row's output then
                        changes with its batch neighbours, which a server mixing many users' requests in a batch
                        cannot accept
    int8_per_token      int8 weights per output channel, activations with one scale per token (hub/int8.py's
                        scheme), so every row is independent of the others

Why own code for `int8_per_token`: ONNX Runtime's quantizer has no per-token activation scale. The rewrite turns each
MatMul with a constant weight into QuantizeLinear over the tokens (axis 0 of [tokens, features], a scale per token)
and ONNX Runtime's fused `MatMulIntegerToFloat` (uint8 activations with zero point 128: the fast u8 x s8 kernel of
x86; s8 x s8 ran several times slower in an ad-hoc trial), then multiplies each token's scale back in.

`export_row_lora` adds per-row LoRA: each row's down and up matrices of every adapted layer are graph inputs (what
benchmarks/onnx_lora.py measures against the hub's PyTorch path). The int8 kinds quantize only MatMuls with a
constant weight, so the adapters' products stay float32.

Needs `pip install onnx onnxruntime` (the `onnx` extra of pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

KINDS = ("float32", "int8", "int8_per_token")
ROW_DEPENDENT = {"int8"}  # kinds whose rows change with their batch neighbours (one activation scale per batch)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LEVELS = 127  # symmetric int8 weights, as hub/int8.py


class _LastHiddenState(nn.Module):
    """The backbone's token states from the three BERT inputs (the graph's one output)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


def export(model: nn.Module, tokenizer, path: Path) -> Path:
    """The float32 backbone as an ONNX graph with a dynamic batch and sequence length. torch's TorchScript exporter
    (`dynamo=False`): ONNX Runtime's int8 kinds ran 1.3x faster from its graph than from the dynamo exporter's here
    (int8 3.42 vs 2.56, per token 3.29 vs 2.50 times eager float32, float32 alike, in one ad-hoc interleaved trial,
    not a shipped benchmark), and the fastest is the reference."""
    import warnings

    example = tokenizer(["an example", "a second, longer example"], return_tensors="pt", padding=True)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUTS, "last_hidden_state")}
    wrapper = _LastHiddenState(model).train(model.training)  # the exporter restores the wrapper's mode afterwards
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, tuple(example[n] for n in INPUTS), str(path), dynamo=False,
                          input_names=list(INPUTS), output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17)
    return path


class _RowLora(nn.Module):
    """A linear layer plus each row's own LoRA update, its matrices graph inputs: x W^T + b + (x A_row) B_row."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.down: torch.Tensor | None = None  # [rows, in, r], set by the graph's forward
        self.up: torch.Tensor | None = None  # [rows, r, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.down is not None and self.up is not None
        return self.base(x) + torch.matmul(torch.matmul(x, self.down), self.up)


class _RowLoraGraph(_LastHiddenState):
    """The backbone with per-row LoRA on `paths`: after the three BERT inputs, a down and an up matrix per path."""

    def __init__(self, model: nn.Module, paths: list[str]):
        super().__init__(model)
        self.layers = []
        for path in paths:
            parent, _, name = path.rpartition(".")
            layer = _RowLora(model.get_submodule(path))
            setattr(model.get_submodule(parent), name, layer)
            self.layers.append(layer)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                *matrices: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            layer.down, layer.up = matrices[2 * i], matrices[2 * i + 1]
        return super().forward(input_ids, attention_mask, token_type_ids)


def row_lora_inputs(paths: list[str]) -> list[str]:
    """The graph inputs `export_row_lora` adds, in order: `<path>.down` [rows, in, r] and `<path>.up` [rows, r, out]."""
    return [f"{path}.{part}" for path in paths for part in ("down", "up")]


def export_row_lora(model: nn.Module, tokenizer, paths: list[str], path: Path) -> Path:
    """The float32 backbone with per-row LoRA on the linear layers at `paths` as an ONNX graph (a copy of `model`
    is changed, not `model`): each row's matrices are inputs, so one graph serves any mix of adapters and ranks."""
    import copy
    import warnings

    graph = _RowLoraGraph(copy.deepcopy(model), paths).eval()
    example = tokenizer(["an example", "a second, longer example"], return_tensors="pt", padding=True)
    rows, rank = example["input_ids"].shape[0], 2
    matrices = []
    for layer in graph.layers:
        matrices += [torch.zeros(rows, layer.base.in_features, rank), torch.zeros(rows, rank, layer.base.out_features)]
    names = row_lora_inputs(paths)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUTS, "last_hidden_state")}
    axes |= {name: {0: "batch", 2 if name.endswith(".down") else 1: "rank"} for name in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (*(example[n] for n in INPUTS), *matrices), str(path), dynamo=False,
                          input_names=[*INPUTS, *names], output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17)
    return path


def quantize_ort(source: Path, target: Path) -> Path:
    """ONNX Runtime's dynamic int8 with its defaults (what its documentation has a user run)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": 1})  # float: the exported graph's shapes are symbolic
    return target


def quantize_per_token(source: Path, target: Path) -> Path:
    """Every MatMul with a constant [in, out] weight as per-token uint8 activations x per-channel int8 weights."""
    import onnx
    from onnx import helper, numpy_helper

    graph_model = onnx.load(str(source))
    graph = graph_model.graph
    weights = {i.name: i for i in graph.initializer}
    shared = [numpy_helper.from_array(np.array(1.0 / LEVELS, np.float32), "pt_inverse_levels"),
              numpy_helper.from_array(np.array(1e-12, np.float32), "pt_epsilon"),
              numpy_helper.from_array(np.array(128, np.uint8), "pt_zero_point"),
              numpy_helper.from_array(np.array(1.0, np.float32), "pt_one"),
              numpy_helper.from_array(np.array([1], np.int64), "pt_axis_1"),
              numpy_helper.from_array(np.array([-1], np.int64), "pt_last")]
    opset = next(o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx"))

    def reduce_max(source: str, result: str):  # over axis 1: an attribute before opset 18, an input from it on
        if opset >= 18:
            return helper.make_node("ReduceMax", [source, "pt_axis_1"], [result], keepdims=0)
        return helper.make_node("ReduceMax", [source], [result], axes=[1], keepdims=0)

    nodes, added = [], []
    for index, node in enumerate(graph.node):
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        matrix = numpy_helper.to_array(weight).astype(np.float32)  # [in, out]
        scale = np.maximum(np.abs(matrix).max(axis=0), 1e-12) / LEVELS
        values = np.clip(np.round(matrix / scale), -LEVELS, LEVELS).astype(np.int8)
        p = f"pt{index}_"
        added += [numpy_helper.from_array(values, p + "weight"),
                  numpy_helper.from_array(scale.astype(np.float32), p + "scale"),
                  numpy_helper.from_array(np.array([-1, matrix.shape[0]], np.int64), p + "flat_shape")]
        x, y = node.input[0], node.output[0]
        nodes += [
            helper.make_node("Shape", [x], [p + "leading"], end=-1),
            helper.make_node("Reshape", [x, p + "flat_shape"], [p + "tokens"]),  # [tokens, in]
            helper.make_node("Abs", [p + "tokens"], [p + "abs"]),
            reduce_max(p + "abs", p + "absmax"),
            helper.make_node("Mul", [p + "absmax", "pt_inverse_levels"], [p + "raw_scale"]),
            helper.make_node("Max", [p + "raw_scale", "pt_epsilon"], [p + "token_scale"]),  # [tokens]
            helper.make_node("Shape", [p + "token_scale"], [p + "count"]),
            helper.make_node("Expand", ["pt_zero_point", p + "count"], [p + "zero_points"]),
            helper.make_node("QuantizeLinear", [p + "tokens", p + "token_scale", p + "zero_points"],
                             [p + "quantized"], axis=0),
            helper.make_node("MatMulIntegerToFloat", [p + "quantized", p + "weight", "pt_one", p + "scale",
                                                      "pt_zero_point"], [p + "channel_scaled"],
                             domain="com.microsoft"),
            helper.make_node("Unsqueeze", [p + "token_scale", "pt_axis_1"], [p + "token_column"]),
            helper.make_node("Mul", [p + "channel_scaled", p + "token_column"], [p + "product"]),
            helper.make_node("Concat", [p + "leading", "pt_last"], [p + "shape"], axis=0),
            helper.make_node("Reshape", [p + "product", p + "shape"], [y]),
        ]
    used = {name for node in nodes for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + added + shared)
    graph_model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(graph_model, str(target))
    return target


def build(model: nn.Module, tokenizer, folder: Path, kinds: tuple[str, ...] = KINDS) -> dict[str, Path]:
    """Each kind's graph file in `folder` (the float32 export once, the int8 kinds from it)."""
    folder.mkdir(parents=True, exist_ok=True)
    float32 = export(model, tokenizer, folder / "float32.onnx")
    makers = {"float32": lambda: float32, "int8": lambda: quantize_ort(float32, folder / "int8.onnx"),
              "int8_per_token": lambda: quantize_per_token(float32, folder / "int8_per_token.onnx")}
    return {kind: makers[kind]() for kind in kinds}


def session(path: Path, threads: int) -> Callable[[dict[str, torch.Tensor]], np.ndarray]:
    """An ONNX Runtime CPU session: tokenizer output (and, for a per-row LoRA graph, each `row_lora_inputs` name's
    matrices) in, last hidden state [batch, sequence, hidden] out."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3  # its notes on the initializers the rewrite leaves unused are not ours to read
    runner = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in runner.get_inputs()]
    return lambda batch: runner.run(None, {name: batch[name].cpu().contiguous().numpy() for name in names})[0]
