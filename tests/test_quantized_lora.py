"""LoRA adapters stored as float16, bfloat16 or int8 (`hub quantize`, hub/methods/lora/quantize.py): served
exactly as their stored values say, int8 kept int8 in memory, plain PEFT kept from misreading int8, bad files
refused by name, and the command line (with a push and pull of an int8 adapter through the fake Hub)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BertModel
from typer.testing import CliRunner

from heads import Row
from hub.adapter_folder import AdapterFolder
from hub.backbone import Backbone
from hub.card import card_metrics
from hub.cli import app
from hub.errors import AdapterError
from hub.methods.lora.quantize import dequantize, quantize_lora_folder
from hub.methods.lora.serving import _Plan

FLOAT, INT8 = AdapterFolder.PEFT_WEIGHTS, "adapter_model.int8.safetensors"
TEXTS = ["good movie", "the plot was very dull", "a", "love it", "this book is nice and the movie is bad"]
KEY = "base_model.model.encoder.layer.0.attention.self.query.lora_{}.weight"  # one matrix pair of every folder


def _lora_folder(backbone_dir, folder, seed):
    """A PEFT LoRA folder with random matrices (B non-zero), and one all-zero column in a B (an untrained rank channel)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["query", "key", "value", "dense"],
                        exclude_modules=["pooler.dense"])
    model = get_peft_model(BertModel.from_pretrained(backbone_dir), config)
    model.peft_config["default"].base_model_name_or_path = "tiny"
    with torch.no_grad():
        model.base_model.model.encoder.layer[0].attention.self.query.lora_B["default"].weight[:, 3].zero_()
    model.save_pretrained(folder)
    return folder


def _weights(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("adapter_model"))


def _backbone(backbone_dir) -> Backbone:
    return Backbone(str(backbone_dir), BertModel.from_pretrained(backbone_dir).eval(),
                    AutoTokenizer.from_pretrained(backbone_dir))


def _peft(backbone_dir, folder):
    from peft import PeftModel

    return PeftModel.from_pretrained(BertModel.from_pretrained(backbone_dir), str(folder)).eval()


def _float_copy(folder, target):
    """The dequantized matrices of an int8 folder as a float32 PEFT folder (the reference of what is served)."""
    target.mkdir()
    shutil.copy(folder / "adapter_config.json", target)
    save_file(dequantize(load_file(folder / INT8)), str(target / FLOAT), metadata={"format": "pt"})
    return target


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8", "float32"])
def test_a_quantized_adapter_serves_its_stored_values_in_a_mixed_batch(tiny_backbone_dir, tmp_path, dtype):
    """Rows of the quantized adapter, of a float32 one and of none in one pass: each equals PEFT's own forward on the
    values the file holds (the half folder read by PEFT itself; for int8, its dequantized matrices)."""
    quantized = _lora_folder(tiny_backbone_dir, tmp_path / "quantized", seed=1)
    plain = _lora_folder(tiny_backbone_dir, tmp_path / "plain", seed=2)
    quantize_lora_folder(quantized, dtype)
    assert _weights(quantized) == [INT8 if dtype == "int8" else FLOAT]
    if dtype != "int8":
        with safe_open(quantized / FLOAT, framework="pt") as stored:  # PEFT's keys, in the half dtype
            assert stored.get_tensor(KEY.format("A")).dtype == getattr(torch, dtype)
    reference = _peft(tiny_backbone_dir, _float_copy(quantized, tmp_path / "ref") if dtype == "int8" else quantized)
    backbone = _backbone(tiny_backbone_dir)
    adapters = [AdapterFolder(f).load_adapter(f.name, backbone, "tiny") for f in (quantized, plain)]
    models = [reference, _peft(tiny_backbone_dir, plain)]
    owners = [0, 1, None, 0, 1, 0]
    encoded = [backbone.tokenizer(TEXTS[i % len(TEXTS)])["input_ids"] for i in range(len(owners))]
    with torch.inference_mode():
        mixed = backbone.encode([Row(ids, [0] * len(ids)) for ids in encoded],
                                [None if o is None else adapters[o] for o in owners])["last_hidden_state"]
        for i, (ids, owner) in enumerate(zip(encoded, owners)):
            model = backbone.model if owner is None else models[owner]
            alone = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
            served = mixed[i, : len(ids)]
            assert torch.allclose(served, alone, atol=1e-5), (i, (served - alone).abs().max())


def test_int8_values_lie_within_half_a_step_of_the_originals(tiny_backbone_dir, tmp_path):
    folder = _lora_folder(tiny_backbone_dir, tmp_path / "a", seed=3)
    original = load_file(folder / FLOAT)
    quantize_lora_folder(folder, "int8")
    stored = load_file(folder / INT8)
    restored = dequantize(stored)
    assert restored.keys() == original.keys()
    for key, matrix in original.items():
        scale, across = stored[key + "_scale"], 1 if ".lora_A." in key else 0  # A: a scale per row, B: per column
        rank = matrix.shape[0] if across == 1 else matrix.shape[1]
        assert stored[key].dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (rank,)
        error = (restored[key].double() - matrix.double()).abs().amax(dim=across)
        assert (error <= scale.double() / 2 * (1 + 1e-5)).all(), key
        assert (stored[key].abs().amax(dim=across)[scale > 0] == 127).all()  # absmax: each channel spans the range
    zero_column = stored[KEY.format("B")][:, 3]
    assert zero_column.eq(0).all() and stored[KEY.format("B") + "_scale"][3] == 0  # a zero channel stays zero
    with safe_open(folder / INT8, framework="pt") as handle:
        assert handle.metadata()["quantization"] == "int8-per-rank-absmax"


def test_plain_peft_refuses_an_int8_folder_and_reads_its_float32_export(tiny_backbone_dir, tmp_path):
    folder = _lora_folder(tiny_backbone_dir, tmp_path / "a", seed=4)
    quantize_lora_folder(folder, "int8")
    with pytest.raises(ValueError):  # PEFT finds no adapter_model.safetensors: it never reads int8 as floats
        _peft(tiny_backbone_dir, folder)
    served = dequantize(load_file(folder / INT8))
    quantize_lora_folder(folder, "float32")  # the export back to what PEFT reads
    assert _weights(folder) == [FLOAT]
    parameters = dict(_peft(tiny_backbone_dir, folder).named_parameters())
    assert torch.equal(parameters[KEY.format("A").replace(".weight", ".default.weight")], served[KEY.format("A")])


def test_an_int8_adapter_stays_int8_in_memory(tiny_backbone_dir, tmp_path):
    folder = _lora_folder(tiny_backbone_dir, tmp_path / "a", seed=5)
    backbone = _backbone(tiny_backbone_dir)
    full = AdapterFolder(folder).load_adapter("full", backbone, "tiny")
    quantize_lora_folder(folder, "int8")
    weights = AdapterFolder(folder).load_adapter("int8", backbone, "tiny")
    assert weights.buffer.dtype == torch.int8 and weights.nbytes <= 1.2 * (folder / INT8).stat().st_size
    assert weights.nbytes < full.nbytes / 2
    half = weights.to(torch.device("cpu"), torch.float16)
    assert half.buffer.dtype == torch.int8 and half.nbytes == weights.nbytes
    assert weights.to(torch.device("cpu")) is weights
    path = next(iter(weights.paths))
    assert half.down(path).dtype == torch.float16 and torch.allclose(half.up(path).float(), weights.up(path), rtol=1e-3)
    assert torch.allclose(weights.up(path), full.up(path), atol=float(full.up(path).abs().max()) / 127)


def test_stacked_int8_adapters_gather_the_matrices_each_serves(tiny_backbone_dir, tmp_path):
    """The GPU's way (buffers and scales stacked, rows gathered, then dequantized) equals each adapter's own down/up."""
    backbone = _backbone(tiny_backbone_dir)
    adapters = []
    for seed in range(3):
        folder = _lora_folder(tiny_backbone_dir, tmp_path / f"a{seed}", seed=seed)
        quantize_lora_folder(folder, "int8")
        adapters.append(AdapterFolder(folder).load_adapter(f"a{seed}", backbone, "tiny"))
    positions = [2, 0, 0, 1, 2]
    gathered, per_row = _Plan(adapters, positions, gather=True), _Plan(adapters, positions, gather=False)
    assert gathered.stacked is not None and gathered.stacked_scales is not None
    for path in adapters[0].paths:
        layer = backbone.row_hook("lora").target_layer(path)
        for ours, reference in zip(gathered.matrices(path, layer), per_row.matrices(path, layer)):
            assert torch.equal(ours, reference)
    plain = AdapterFolder(_lora_folder(tiny_backbone_dir, tmp_path / "p", seed=9)).load_adapter("p", backbone, "tiny")
    assert _Plan([adapters[0], plain], [0, 1], gather=True).stacked is None  # int8 and float: served per adapter


def _damage(folder, damage):
    tensors, metadata = load_file(folder / INT8), {"format": "pt", "quantization": "int8-per-rank-absmax"}
    if damage == "missing scale":
        del tensors[KEY.format("B") + "_scale"]
    elif damage == "wrong-shaped scale":
        tensors[KEY.format("A") + "_scale"] = torch.ones(3)
    elif damage == "NaN scale":
        tensors[KEY.format("B") + "_scale"][0] = float("nan")
    elif damage == "unknown quantization":
        metadata["quantization"] = "int4-groups"
    elif damage == "float matrix":
        tensors[KEY.format("A")] = tensors[KEY.format("A")].float()
    else:  # both files
        shutil.copy(folder.parent / "original" / FLOAT, folder / FLOAT)
    save_file(tensors, str(folder / INT8), metadata=metadata)


@pytest.mark.parametrize("damage, message", [
    ("missing scale", r"lora_B\.weight has no scale tensor .*lora_B\.weight_scale"),
    ("wrong-shaped scale", r"lora_A\.weight_scale is F32 of shape \(3,\), but its matrix needs F32 of shape \(4,\)"),
    ("NaN scale", r"lora_B\.weight_scale holds 1 NaN/inf"),
    ("unknown quantization", "records quantization 'int4-groups'"),
    ("float matrix", r"lora_A\.weight is stored as F32, not I8"),
    ("both files", "holds both adapter_model.safetensors and adapter_model.int8.safetensors"),
])
def test_bad_int8_files_are_refused_by_name(tiny_backbone_dir, tmp_path, damage, message):
    original = _lora_folder(tiny_backbone_dir, tmp_path / "original", seed=6)
    folder = tmp_path / "damaged"
    shutil.copytree(original, folder)
    quantize_lora_folder(folder, "int8")
    _damage(folder, damage)
    with pytest.raises(AdapterError, match=message):
        AdapterFolder(folder).load_adapter("damaged", _backbone(tiny_backbone_dir), "tiny")
    if damage != "NaN scale":  # read without a backbone too, by the export back to float32
        with pytest.raises(AdapterError, match=message):
            quantize_lora_folder(folder, "float32")


def test_only_lora_folders_and_known_dtypes_are_quantized(tiny_backbone_dir, tmp_path):
    folder = _lora_folder(tiny_backbone_dir, tmp_path / "a", seed=7)
    before = (folder / FLOAT).read_bytes()
    with pytest.raises(AdapterError, match="unknown storage dtype 'int4'; use one of: float32, float16"):
        quantize_lora_folder(folder, "int4")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(AdapterError, match="holds a IA3 adapter; only LoRA adapters are quantized"):
        quantize_lora_folder(folder, "int8")
    assert (folder / FLOAT).read_bytes() == before and not (folder / INT8).exists()


runner = CliRunner()


def _registry_copy(trained_registry, tmp_path):
    shutil.copytree(trained_registry.parent, tmp_path / "registry")
    return tmp_path / "registry" / trained_registry.name


def _answer(registry, text="the movie was good"):
    result = runner.invoke(app, ["run", "sentiment", text, "-r", str(registry)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_hub_quantize_rewrites_the_folder_and_back(trained_registry, tiny_backbone_dir, tmp_path):
    registry = _registry_copy(trained_registry, tmp_path)
    folder = registry.parent / "adapters" / "sentiment"
    original, float_bytes = _answer(registry), AdapterFolder(folder).nbytes()
    result = runner.invoke(app, ["quantize", "sentiment", "--dtype", "int8", "--head", "float16", "-r", str(registry)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {k: report[k] for k in ("task", "adapter", "head", "weights_file", "bytes_before", "bytes_after")} == {
        "task": "sentiment", "adapter": "int8", "head": "float16", "weights_file": INT8, "bytes_before": float_bytes,
        "bytes_after": AdapterFolder(folder).nbytes()} and report["bytes_after"] < float_bytes
    assert not (folder / FLOAT).exists()
    with safe_open(folder / "head.safetensors", framework="pt") as head:
        assert {head.get_slice(key).get_dtype() for key in head.keys()} == {"F16"}
    card = (folder / "README.md").read_text()
    size = AdapterFolder(folder).nbytes() - len(card.encode())
    assert f"adapter_bytes: {size}\n" in card and f"card excluded): {size:,}\n" in card
    assert "weights stored as int8, head as float16" in card and "which PEFT does not read" in card
    assert card_metrics(folder) == pytest.approx(report["metrics"], abs=1e-4)  # measured on what is stored
    quantized = _answer(registry)
    assert quantized["label"] == original["label"] and quantized["score"] == pytest.approx(original["score"], abs=0.02)

    refused = runner.invoke(app, ["quantize", "sentiment", "--dtype", "int4", "-r", str(registry)])
    assert refused.exit_code == 2 and "unknown storage dtype 'int4'" in refused.output, refused.output
    assert _weights(folder) == [INT8]  # left as it was

    back = runner.invoke(app, ["quantize", "sentiment", "--dtype", "float32", "-r", str(registry)])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["weights_file"] == FLOAT and not (folder / INT8).exists()
    assert "weights stored as float32, head as float16" in (folder / "README.md").read_text()
    assert _answer(registry) == quantized  # float32 holds the int8 values exactly: served the same
    assert any("lora_A" in name for name, _ in _peft(tiny_backbone_dir, folder).named_parameters())


def test_an_int8_adapter_is_pushed_pulled_and_fetched_as_int8(trained_registry, tiny_backbone_dir, tmp_path):
    """Pulls and fetches (online, then offline from the cache) take whichever weights file the repo holds, and a push
    of the other kind deletes the old one."""
    from fake_hub import FakeHub
    from test_remote import hub_cli, ok, tiny_registry, user_registry, write_registry

    registry = _registry_copy(trained_registry, tmp_path)
    mine = user_registry(tmp_path / "user", tiny_backbone_dir)
    pushed, commits = {}, {}
    with FakeHub() as server:
        for dtype, task in (("int8", "pulled"), ("float32", "again")):
            assert runner.invoke(app, ["quantize", "sentiment", "--dtype", dtype, "-r", str(registry)]).exit_code == 0
            push, pull = hub_cli(server, tmp_path / "home",
                                 ["push", "sentiment", "--repo", "tester/sentiment", "-r", str(registry)],
                                 ["pull", "tester/sentiment", "--as", task, "-r", str(mine)])
            ok(pull)
            commits[dtype] = ok(push)["commit"]
            files = server.repos["tester/sentiment"].commits[commits[dtype]].files
            pushed[dtype] = sorted(name for name in files if "adapter_model" in name)
        entry = {"name": "remote", "backbone": "tiny", "kind": "classification", "labels": ["negative", "positive"],
                 "inputs": ["text"], "metric": "accuracy", "hub": f"tester/sentiment@{commits['int8']}"}
        fetched = {}
        for mode in ("online", "offline"):
            (tmp_path / mode).mkdir()
            path = write_registry(tmp_path / mode, tiny_registry(tmp_path / mode, tiny_backbone_dir, tasks=[entry]))
            run = ["run", "remote", "the movie was good", "-r", str(path)]
            fetched[mode] = ok(hub_cli(server, tmp_path / "home", run, offline=mode == "offline")[0])
            assert _weights(tmp_path / mode / "adapters" / "remote") == [INT8]
    assert pushed == {"int8": [INT8], "float32": [FLOAT]}
    store = mine.parent / "adapters"
    assert _weights(store / "pulled") == [INT8] and _weights(store / "again") == [FLOAT]
    served = _answer(registry)["score"]  # the float32 export holds the int8 values
    pulled = runner.invoke(app, ["run", "pulled", "the movie was good", "-r", str(mine)])
    assert json.loads(pulled.stdout)["score"] == fetched["online"]["score"] == fetched["offline"]["score"] == served
