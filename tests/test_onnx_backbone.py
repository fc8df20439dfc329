"""The ONNX Runtime references of the serving benchmarks (benchmarks/onnx_backbone.py): float32 is the torch
backbone, the per-token int8 graph computes hub/int8.py's scheme and keeps every row independent of its batch,
ONNX Runtime's own int8 does not."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from conftest import REPO

pytest.importorskip("onnxruntime")
sys.path.insert(0, str(REPO / "benchmarks"))

import onnx_backbone  # noqa: E402

from hub.int8 import quantize_linear_layers  # noqa: E402

TEXTS = ["good movie", "the plot was very dull, and this book is awful", "a", "great!", "it is what it is 42 times"]


@pytest.fixture(scope="module")
def backbone(tiny_backbone_dir):
    from transformers import AutoTokenizer, BertModel

    return BertModel.from_pretrained(tiny_backbone_dir).eval(), AutoTokenizer.from_pretrained(tiny_backbone_dir)


@pytest.fixture(scope="module")
def graphs(backbone, tmp_path_factory):
    model, tokenizer = backbone
    return onnx_backbone.build(model, tokenizer, tmp_path_factory.mktemp("onnx"))


def states(run, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    return torch.as_tensor(run(batch)), batch["attention_mask"].bool()


def torch_run(model):
    def run(batch):
        with torch.inference_mode():
            return model(**batch).last_hidden_state
    return run


def test_the_export_leaves_the_model_as_it_was(backbone, graphs):
    model, _ = backbone
    assert not model.training and all(path.stat().st_size > 0 for path in graphs.values())


def test_float32_and_per_token_int8_compute_what_torch_does(backbone, graphs):
    model, tokenizer = backbone
    reference, mask = states(torch_run(model), tokenizer, TEXTS)
    exported, _ = states(onnx_backbone.session(graphs["float32"], 1), tokenizer, TEXTS)
    assert torch.allclose(exported[mask], reference[mask], atol=1e-4)
    int8_model = copy.deepcopy(model)
    quantize_linear_layers(int8_model)
    hub_int8, _ = states(torch_run(int8_model), tokenizer, TEXTS)
    per_token, _ = states(onnx_backbone.session(graphs["int8_per_token"], 1), tokenizer, TEXTS)
    cosine = torch.nn.functional.cosine_similarity(per_token[mask], reference[mask], dim=-1)
    assert cosine.min() > 0.98  # int8: close to float32, not equal
    assert (per_token[mask] - hub_int8[mask]).abs().max() < 0.05  # hub/int8.py's scheme (rounding may differ)


@pytest.mark.parametrize("kind", ["float32", "int8_per_token"])
def test_a_row_does_not_depend_on_its_batch(backbone, graphs, kind):
    _, tokenizer = backbone
    run = onnx_backbone.session(graphs[kind], 1)
    for i, text in enumerate(TEXTS):
        alone, mask = states(run, tokenizer, [text])
        together, _ = states(run, tokenizer, TEXTS)
        assert torch.allclose(together[i, : mask.shape[1]][mask[0]], alone[0][mask[0]], atol=1e-5), text


def test_onnx_runtimes_own_int8_lets_a_row_depend_on_its_batch(backbone, graphs):
    """Why the serving benchmark names the fastest row-independent A beside the fastest A."""
    _, tokenizer = backbone
    run = onnx_backbone.session(graphs["int8"], 1)
    alone, mask = states(run, tokenizer, [TEXTS[0]])
    together, _ = states(run, tokenizer, TEXTS)
    assert (together[0, : mask.shape[1]][mask[0]] - alone[0][mask[0]]).abs().max() > 1e-4  # 10x the others' bound
    assert onnx_backbone.ROW_DEPENDENT == {"int8"}


def test_per_row_lora_graph_gives_each_row_its_own_merged_model(backbone, tmp_path):
    """`export_row_lora`: row i's output equals the backbone with row i's adapter merged into its weights (W + (AB)^T),
    rows of different adapters (and a row without one: zero matrices) in one pass; int8 per token stays close."""
    model, tokenizer = backbone
    paths = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and not name.startswith("pooler")]
    graph = onnx_backbone.export_row_lora(model, tokenizer, paths, tmp_path / "lora.onnx")
    assert not any(isinstance(m, onnx_backbone._RowLora) for m in model.modules())  # a copy was changed
    generator = torch.Generator().manual_seed(0)
    adapters = [{path: (torch.randn(module.in_features, 4, generator=generator) * 0.1,
                        torch.randn(4, module.out_features, generator=generator) * 0.1)
                 for path, module in model.named_modules() if path in paths} for _ in range(2)]
    adapters.append({path: (torch.zeros(m.in_features, 4), torch.zeros(4, m.out_features))
                     for path, m in model.named_modules() if path in paths})
    texts = TEXTS[:3]
    batch = dict(tokenizer(texts, return_tensors="pt", padding=True))
    for path in paths:
        batch[f"{path}.down"] = torch.stack([a[path][0] for a in adapters])
        batch[f"{path}.up"] = torch.stack([a[path][1] for a in adapters])
    output = torch.as_tensor(onnx_backbone.session(graph, 1)(batch))
    int8 = onnx_backbone.quantize_per_token(graph, tmp_path / "lora_int8.onnx")
    output_int8 = torch.as_tensor(onnx_backbone.session(int8, 1)(batch))
    for i, (text, adapter) in enumerate(zip(texts, adapters)):
        merged = copy.deepcopy(model)
        with torch.no_grad():
            for path, (down, up) in adapter.items():
                merged.get_submodule(path).weight += (down @ up).t()
        alone, mask = states(torch_run(merged), tokenizer, [text])
        row = output[i, : mask.shape[1]][mask[0]]
        assert torch.allclose(row, alone[0][mask[0]], atol=1e-4), text
        cosine = torch.nn.functional.cosine_similarity(output_int8[i, : mask.shape[1]][mask[0]], row, dim=-1)
        assert cosine.min() > 0.98
