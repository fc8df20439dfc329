"""The batched per-row LoRA (hub/methods/lora) against PEFT's own mixed-adapter forward."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, BertModel

from hub.adapter_folder import AdapterFolder
from hub.backbone import Backbone
from hub.errors import AdapterError

TEXTS = ["good movie", "the plot was very dull", "a", "this book is nice and the movie is bad", "it", "love it"]

CONFIGS = {  # name -> LoraConfig options: ranks, alpha/rank patterns, rsLoRA, different target sets
    "qv4": {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]},
    "all8": {"r": 8, "lora_alpha": 16, "target_modules": ["query", "key", "value", "dense"],
             "rank_pattern": {"key": 2}, "alpha_pattern": {"value": 3.0}},
    "rs": {"r": 6, "lora_alpha": 4, "use_rslora": True, "target_modules": ["intermediate.dense", "query"]},
}


@pytest.fixture(scope="module")
def peft_folders(tiny_backbone_dir, tmp_path_factory):
    """One saved PEFT LoRA folder per config, with random (non-zero) B matrices."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("peft_adapters")
    folders = {}
    for seed, (name, options) in enumerate(CONFIGS.items()):
        torch.manual_seed(seed)
        model = get_peft_model(BertModel.from_pretrained(tiny_backbone_dir), LoraConfig(init_lora_weights=False, **options))
        model.peft_config["default"].base_model_name_or_path = "tiny"
        model.save_pretrained(root / name)
        folders[name] = root / name
    return folders


def _backbone(folder) -> Backbone:
    return Backbone(location=str(folder), model=BertModel.from_pretrained(folder).eval(), tokenizer=AutoTokenizer.from_pretrained(folder))


def load_lora(backbone, name, folder, base_model_id):
    return AdapterFolder(folder).load_adapter(name, backbone, base_model_id)


def _peft_reference(tiny_backbone_dir, folders, names, encoded):
    from peft import PeftModel

    model = BertModel.from_pretrained(tiny_backbone_dir).eval()
    first, *rest = dict.fromkeys(n for n in names if n != "__base__")
    peft_model = PeftModel.from_pretrained(model, folders[first], adapter_name=first)
    for name in rest:
        peft_model.load_adapter(folders[name], adapter_name=name)
    with torch.inference_mode():
        return peft_model(**encoded, adapter_names=names).last_hidden_state


@pytest.mark.parametrize("names", [
    ["qv4", "all8", "rs", "all8", "__base__", "qv4"],  # mixed: ranks, patterns, rsLoRA, a row without adapter
    ["all8"] * 6,  # one adapter for every row (the single-adapter fast path)
])
def test_mixed_rows_equal_peft_adapter_names(tiny_backbone_dir, peft_folders, names):
    backbone = _backbone(tiny_backbone_dir)
    loaded = {name: load_lora(backbone, name, peft_folders[name], "tiny") for name in CONFIGS}
    encoded = backbone.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode(), backbone.row_hook("lora").rows([loaded.get(name) for name in names]):
        ours = backbone.model(**encoded).last_hidden_state
    reference = _peft_reference(tiny_backbone_dir, peft_folders, names, encoded)
    assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()
    with torch.inference_mode():  # outside `rows` the hooks add nothing: the plain frozen backbone
        plain = backbone.model(**encoded).last_hidden_state
    assert torch.equal(plain, BertModel.from_pretrained(tiny_backbone_dir).eval()(**encoded).last_hidden_state.detach())
    assert not torch.allclose(plain, ours)


def test_one_stack_of_a_layout_equals_the_stack_layer_by_layer(tiny_backbone_dir, peft_folders):
    """Adapters of one layout stacked once (views per layer, the default) give each layer what stacking it layer by
    layer gives; different layouts are stacked layer by layer, padded to the largest rank, zeros where one lacks a
    layer."""
    from hub.methods.lora.serving import _one_layout, _own_layers, _Plan, _stacked_by_layer, _views_of_one_stack

    backbone = _backbone(tiny_backbone_dir)
    same_shape = [load_lora(backbone, f"all8_{i}", peft_folders["all8"], "tiny") for i in range(3)]
    for adapter, scale in zip(same_shape, (1.0, -2.0, 0.5)):  # three different adapters of one layout
        adapter.buffer.mul_(scale)
    assert _one_layout(same_shape)
    views, by_layer = _views_of_one_stack(same_shape), _stacked_by_layer(same_shape, *_own_layers(same_shape))
    assert views.keys() == by_layer.keys() == set(same_shape[0].paths)
    for path in views:
        for ours, reference in zip(views[path], by_layer[path]):
            assert torch.equal(ours, reference)
    qv4 = load_lora(backbone, "qv4", peft_folders["qv4"], "tiny")
    mixed = [same_shape[0], qv4, None]
    assert not _one_layout(mixed)
    plan = _Plan(mixed, [2, 0, 1, 0])
    assert plan.index.tolist() == [2, 0, 1, 0]
    query = "encoder.layer.0.attention.self.query"
    downs, ups = plan.stacks[query]
    assert downs.shape[:2] == (3, 8) and ups.shape[::2] == (3, 8)  # padded to all8's rank
    assert torch.equal(downs[1, :4], qv4.down(query)) and not downs[1, 4:].any() and not ups[1, :, 4:].any()
    assert not downs[2].any() and not ups[2].any()  # the row without an adapter
    key = "encoder.layer.0.attention.self.key"  # all8 has it, qv4 not: zeros
    assert not plan.stacks[key][0][1].any() and torch.equal(plan.stacks[key][0][0], same_shape[0].down(key))


def test_loading_reads_matrices_and_hooks_only_their_layers(tiny_backbone_dir, peft_folders):
    backbone = _backbone(tiny_backbone_dir)
    weights = load_lora(backbone, "qv4", peft_folders["qv4"], "tiny")
    assert backbone.row_hook("lora").hooked_paths == set(weights.paths) == {f"encoder.layer.{i}.attention.self.{m}" for i in (0, 1) for m in ("query", "value")}
    assert weights.nbytes == sum(weights.down(p).numel() * 4 + weights.up(p).numel() * 4 for p in weights.paths)
    assert all(not isinstance(m, torch.nn.Identity) for m in backbone.model.modules())  # no module was replaced
    assert not any("lora" in name for name, _ in backbone.model.named_parameters())


def test_a_resident_adapter_is_a_few_objects_for_the_garbage_collector(tiny_backbone_dir, peft_folders):
    """A full GC scan walks every tracked object: an adapter must not add one per matrix (all8 has 24)."""
    import gc

    backbone = _backbone(tiny_backbone_dir)
    first = load_lora(backbone, "all8", peft_folders["all8"], "tiny")
    gc.collect()
    before = len(gc.get_objects())
    more = [load_lora(backbone, f"all8_{i}", peft_folders["all8"], "tiny") for i in range(20)]
    gc.collect()
    assert (len(gc.get_objects()) - before) / len(more) <= 3
    assert all(w.layout is first.layout for w in more)  # one shared layout for adapters of one shape
    assert torch.equal(more[0].down(next(iter(first.paths))), first.down(next(iter(first.paths))))


def test_weights_built_from_matrices_match_the_loaded_ones(tiny_backbone_dir, peft_folders):
    from hub.methods.lora.weights import lora_weights_from_matrices

    loaded = load_lora(_backbone(tiny_backbone_dir), "all8", peft_folders["all8"], "tiny")
    rebuilt = lora_weights_from_matrices("copy", {p: (loaded.down(p), loaded.up(p)) for p in loaded.paths})
    assert rebuilt.layout is loaded.layout and torch.equal(rebuilt.buffer, loaded.buffer)
    empty = lora_weights_from_matrices("empty", {})
    assert empty.nbytes == 0 and not empty.paths


def _rewrite_config(folder, target, **changes):
    import shutil

    shutil.copytree(folder, target)
    config = json.loads((target / "adapter_config.json").read_text())
    (target / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    return target


@pytest.mark.parametrize("change, message", [
    ({"use_dora": True}, "use_dora"),
    ({"bias": "all"}, "bias='all'"),
    ({"modules_to_save": ["classifier"]}, "modules_to_save"),
    ({"r": 3}, "has shape"),
    ({"peft_type": "LOHA"}, "'LOHA' is not served yet"),
    ({"peft_type": "IA3"}, r"not an \(IA\)3 vector"),  # another method's folder type: its loader names the tensors
])
def test_unserved_lora_options_are_refused(tiny_backbone_dir, peft_folders, tmp_path, change, message):
    folder = _rewrite_config(peft_folders["qv4"], tmp_path / "changed", **change)
    with pytest.raises(AdapterError, match=message):
        load_lora(_backbone(tiny_backbone_dir), "changed", folder, "tiny")


def test_a_file_with_only_one_lora_half_is_refused(tiny_backbone_dir, peft_folders, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _rewrite_config(peft_folders["qv4"], tmp_path / "half")
    tensors = load_file(folder / "adapter_model.safetensors")
    del tensors["base_model.model.encoder.layer.0.attention.self.query.lora_B.weight"]
    save_file(tensors, folder / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match="only one of lora_A / lora_B"):
        load_lora(_backbone(tiny_backbone_dir), "half", folder, "tiny")


def test_a_half_precision_file_stays_half_in_memory(tiny_backbone_dir, peft_folders, tmp_path):
    """A float16 file served by a float32 backbone is kept as stored (its bytes on disk, not twice them) and widened
    per pass; a file of mixed float dtypes goes through the converting path into the serving dtype."""
    from safetensors.torch import load_file, save_file

    folder = _rewrite_config(peft_folders["all8"], tmp_path / "half_precision")
    tensors = load_file(folder / "adapter_model.safetensors")
    save_file({k: v.half() for k, v in tensors.items()}, folder / "adapter_model.safetensors")
    backbone = _backbone(tiny_backbone_dir)
    full = load_lora(backbone, "full", peft_folders["all8"], "tiny")
    half = load_lora(backbone, "half", folder, "tiny")
    assert half.paths == full.paths and half.buffer.dtype == torch.float16 and half.nbytes < 0.55 * full.nbytes
    for path in full.paths:
        assert half.down(path).dtype == half.up(path).dtype == torch.float32
        assert torch.allclose(half.down(path), full.down(path), atol=1e-2) and torch.allclose(half.up(path), full.up(path), atol=1e-2)
    mixed = dict(tensors)
    mixed[next(iter(mixed))] = mixed[next(iter(mixed))].half()
    save_file(mixed, folder / "adapter_model.safetensors")
    converted = load_lora(backbone, "mixed", folder, "tiny")
    assert converted.buffer.dtype == torch.float32 and converted.scales is None


@pytest.mark.parametrize("damage", ["truncated data", "header length", "not JSON", "entry outside"])
def test_damaged_safetensors_are_refused(tiny_backbone_dir, peft_folders, tmp_path, damage):
    folder = _rewrite_config(peft_folders["qv4"], tmp_path / "damaged")
    path = folder / "adapter_model.safetensors"
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    if damage == "truncated data":
        raw = raw[:-100]
    elif damage == "header length":
        raw = (10 ** 9).to_bytes(8, "little") + raw[8:]
    elif damage == "not JSON":
        raw = raw[:8] + b"{" * length + raw[8 + length:]
    else:
        key = next(k for k in header if k != "__metadata__")
        header[key]["data_offsets"] = [0, 10 ** 7]
        encoded = json.dumps(header).encode().ljust(length)
        raw = len(encoded).to_bytes(8, "little") + encoded + raw[8 + length:]
    path.write_bytes(raw)
    with pytest.raises(AdapterError, match="safetensors|could not be read|shape"):
        load_lora(_backbone(tiny_backbone_dir), "damaged", folder, "tiny")
