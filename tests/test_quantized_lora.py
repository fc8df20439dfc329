"""LoRA adapters stored as float16, bfloat16, int8 or int4, or at a lower rank (`hub quantize`,
hub/methods/lora/quantize.py, quantized_file.py): served exactly as their stored values say, integers kept so in
memory, plain PEFT kept from misreading them, bad files refused by name, and the command line (with a push and pull
of a quantized adapter through the fake Hub)."""

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
from hub.methods.lora.quantize import quantize_lora_folder, read_float_matrices, reduce_lora_rank
from hub.methods.lora.quantized_file import pack_int4, unpack_int4
from hub.methods.lora.serving import WidenedCache, _one_layout, _own_layers, _Plan, _stacked_by_layer
from hub.safetensors_header import read_safetensors_header

FLOAT, QUANTIZED = AdapterFolder.PEFT_WEIGHTS, "adapter_model.quantized.safetensors"
LEVELS = {"int8": 127, "int4": 7}
TEXTS = ["good movie", "the plot was very dull", "a", "love it", "this book is nice and the movie is bad"]
KEY = "base_model.model.encoder.layer.0.attention.self.query.lora_{}.weight"  # one matrix pair of every folder


def _lora_folder(backbone_dir, folder, seed, rank=4):
    """A PEFT LoRA folder with random matrices (B non-zero), and one all-zero column in a B (an untrained rank channel)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                        target_modules=["query", "key", "value", "dense"], exclude_modules=["pooler.dense"])
    model = get_peft_model(BertModel.from_pretrained(backbone_dir), config)
    model.peft_config["default"].base_model_name_or_path = "tiny"
    with torch.no_grad():
        model.base_model.model.encoder.layer[0].attention.self.query.lora_B["default"].weight[:, rank - 1].zero_()
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
    """The dequantized matrices of a quantized folder as a float32 PEFT folder (the reference of what is served)."""
    target.mkdir()
    shutil.copy(folder / "adapter_config.json", target)
    save_file(read_float_matrices(folder / QUANTIZED), str(target / FLOAT), metadata={"format": "pt"})
    return target


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8", "int4", "float32"])
def test_a_quantized_adapter_serves_its_stored_values_in_a_mixed_batch(tiny_backbone_dir, tmp_path, dtype):
    """Rows of the quantized adapter, of a float32 one and of none in one pass: each equals PEFT's own forward on the
    values the file holds (the half folder read by PEFT itself; for int8 / int4, its dequantized matrices)."""
    quantized = _lora_folder(tiny_backbone_dir, tmp_path / "quantized", seed=1)
    plain = _lora_folder(tiny_backbone_dir, tmp_path / "plain", seed=2)
    quantize_lora_folder(quantized, dtype)
    integer = dtype in LEVELS
    assert _weights(quantized) == [QUANTIZED if integer else FLOAT]
    if not integer:
        with safe_open(quantized / FLOAT, framework="pt") as stored:  # PEFT's keys, in the half dtype
            assert stored.get_tensor(KEY.format("A")).dtype == getattr(torch, dtype)
    reference = _peft(tiny_backbone_dir, _float_copy(quantized, tmp_path / "ref") if integer else quantized)
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


def test_int4_packing_round_trips_every_value():
    values = torch.arange(-8, 8, dtype=torch.int8).repeat(3)[torch.randperm(48)]
    assert torch.equal(unpack_int4(pack_int4(values)), values) and pack_int4(values).numel() == 24


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_quantized_values_lie_within_half_a_step_of_the_originals(tiny_backbone_dir, tmp_path, dtype):
    folder = _lora_folder(tiny_backbone_dir, tmp_path / "a", seed=3)
    original, peft_header = load_file(folder / FLOAT), read_safetensors_header(folder / FLOAT).data_start
    quantize_lora_folder(folder, dtype)
    restored = read_float_matrices(folder / QUANTIZED)
    assert restored.keys() == original.keys()
    for key, matrix in original.items():
        across = 1 if ".lora_A." in key else 0  # A: a scale per row, B: per column
        step = matrix.abs().amax(dim=across).double() / LEVELS[dtype]
        error = (restored[key].double() - matrix.double()).abs().amax(dim=across)
        assert (error <= step / 2 * (1 + 1e-5)).all(), key
        # absmax: each channel's largest value is stored exactly (up to float rounding)
        assert torch.allclose(restored[key].abs().amax(dim=across), matrix.abs().amax(dim=across), rtol=1e-6)
    assert restored[KEY.format("B")][:, 3].eq(0).all()  # a zero channel stays zero
    header = read_safetensors_header(folder / QUANTIZED)
    values = 2 * header.tensors["values"].shape[0] if dtype == "int4" else header.tensors["values"].shape[0]
    assert sorted(header.tensors) == ["scales", "values"] and values == sum(m.numel() for m in original.values())
    assert header.tensors["values"].dtype == ("U8" if dtype == "int4" else "I8")
    with safe_open(folder / QUANTIZED, framework="pt") as handle:
        assert handle.metadata()["quantization"] == f"{dtype}-per-rank-absmax"
    # the layers listed once: a smaller header than PEFT's tensor-per-matrix file (which has no scales to list)
    assert header.data_start < peft_header / 2


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_plain_peft_refuses_a_quantized_folder_and_reads_its_float32_export(tiny_backbone_dir, tmp_path, dtype):
    folder = _lora_folder(tiny_backbone_dir, tmp_path / "a", seed=4)
    quantize_lora_folder(folder, dtype)
    with pytest.raises(ValueError):  # PEFT finds no adapter_model.safetensors: it never reads integers as floats
        _peft(tiny_backbone_dir, folder)
    served = read_float_matrices(folder / QUANTIZED)
    quantize_lora_folder(folder, "float32")  # the export back to what PEFT reads
    assert _weights(folder) == [FLOAT]
    parameters = dict(_peft(tiny_backbone_dir, folder).named_parameters())
    assert torch.equal(parameters[KEY.format("A").replace(".weight", ".default.weight")], served[KEY.format("A")])


@pytest.mark.parametrize("dtype, stored", [("int8", torch.int8), ("int4", torch.uint8)])
def test_a_quantized_adapter_stays_so_in_memory(tiny_backbone_dir, tmp_path, dtype, stored):
    folder = _lora_folder(tiny_backbone_dir, tmp_path / "a", seed=5)
    backbone = _backbone(tiny_backbone_dir)
    full = AdapterFolder(folder).load_adapter("full", backbone, "tiny")
    quantize_lora_folder(folder, dtype)
    weights = AdapterFolder(folder).load_adapter(dtype, backbone, "tiny")
    assert weights.buffer.dtype == stored and weights.nbytes <= 1.2 * (folder / QUANTIZED).stat().st_size
    assert weights.nbytes < full.nbytes / (2 if dtype == "int8" else 4)
    half = weights.to(torch.device("cpu"), torch.float16)
    assert half.buffer.dtype == stored and half.nbytes == weights.nbytes
    assert weights.to(torch.device("cpu")) is weights
    path = next(iter(weights.paths))
    assert half.down(path).dtype == torch.float16 and torch.allclose(half.up(path).float(), weights.up(path), rtol=1e-3)
    assert torch.allclose(weights.up(path), full.up(path), atol=float(full.up(path).abs().max()) / LEVELS[dtype])


@pytest.mark.parametrize("dtype", ["int8", "int4", "float16"])
def test_a_narrow_adapter_widened_for_a_pass_serves_exactly_its_own_matrices(tiny_backbone_dir, tmp_path, dtype):
    """The CPU pass dequantizes each narrow adapter once, whole (`widened`): bit for bit what down/up give per layer,
    odd ranks (int4's padded matrices) included; a float32 adapter is its own widened copy."""
    backbone = _backbone(tiny_backbone_dir)
    folder = _lora_folder(tiny_backbone_dir, tmp_path / "a", seed=4, rank=3)
    plain = AdapterFolder(folder).load_adapter("plain", backbone, "tiny")
    assert plain.widened() is plain
    quantize_lora_folder(folder, dtype)
    narrow = AdapterFolder(folder).load_adapter("narrow", backbone, "tiny")
    assert narrow.scales is not None
    wide = narrow.widened()
    assert wide.scales is None and wide.buffer.dtype == torch.float32
    for path in narrow.paths:
        assert torch.equal(wide.down(path), narrow.down(path)) and torch.equal(wide.up(path), narrow.up(path))


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_stacked_quantized_adapters_gather_the_matrices_each_serves(tiny_backbone_dir, tmp_path, dtype):
    """Quantized adapters widened once per pass, stacked, rows gathered: each row gets its adapter's own down/up,
    exactly as stacking them layer by layer gives them. A float adapter of another file has another layout."""
    backbone = _backbone(tiny_backbone_dir)
    adapters = []
    for seed in range(3):
        folder = _lora_folder(tiny_backbone_dir, tmp_path / f"a{seed}", seed=seed, rank=3)  # odd: padded matrices
        quantize_lora_folder(folder, dtype)
        adapters.append(AdapterFolder(folder).load_adapter(f"a{seed}", backbone, "tiny"))
    positions = [2, 0, 0, 1, 2]
    plan = _Plan(adapters, positions)
    wide = [adapter.widened() for adapter in adapters]
    assert _one_layout(wide)  # widened alike: views of one stack
    by_layer = _stacked_by_layer(wide, *_own_layers(wide))
    for path in adapters[0].paths:
        for stack, reference, which in zip(plan.stacks[path], by_layer[path], ("down", "up")):
            assert stack.dtype == torch.float32 and torch.equal(stack, reference)
            for row, position in enumerate(positions):
                assert torch.equal(stack[plan.index[row]], getattr(adapters[position], which)(path))
    plain = AdapterFolder(_lora_folder(tiny_backbone_dir, tmp_path / "p", seed=9, rank=3)).load_adapter("p", backbone, "tiny")
    assert not _one_layout([wide[0], plain.widened()])


def test_the_widened_cache_keeps_recent_copies_within_its_bytes(tiny_backbone_dir, tmp_path):
    """A narrow adapter is widened once while it stays among the most recently served that fit `max_bytes` (its copy
    equals a fresh widening); the least recently used goes first; a float adapter is served as it is."""
    backbone = _backbone(tiny_backbone_dir)
    adapters = []
    for seed in range(3):
        folder = _lora_folder(tiny_backbone_dir, tmp_path / f"a{seed}", seed=seed)
        quantize_lora_folder(folder, "int4")
        adapters.append(AdapterFolder(folder).load_adapter(f"a{seed}", backbone, "tiny"))
    one = adapters[0].widened().nbytes
    cache = WidenedCache(max_bytes=2 * one)
    first = cache(adapters[0])
    assert torch.equal(first.buffer, adapters[0].widened().buffer) and first.scales is None
    assert cache(adapters[0]) is first and cache.nbytes == one  # a hit: not widened again
    second = cache(adapters[1])
    cache(adapters[0])  # now the most recent: adapters[1] is the one to drop
    cache(adapters[2])
    assert cache.nbytes == 2 * one
    assert cache(adapters[0]) is first
    again = cache(adapters[1])  # dropped: widened anew (the same values)
    assert again is not second and torch.equal(again.buffer, second.buffer) and cache.nbytes == 2 * one
    plain = AdapterFolder(_lora_folder(tiny_backbone_dir, tmp_path / "p", seed=9)).load_adapter("p", backbone, "tiny")
    assert cache(plain) is plain
    assert WidenedCache(max_bytes=one - 1)(adapters[0]).nbytes == one  # too big to keep: widened, not cached


def _damage(folder, damage):
    path = folder / QUANTIZED
    tensors = load_file(path)
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    layers = json.loads(metadata["lora_layers"])
    if damage == "short values":
        tensors["values"] = tensors["values"][:-2]
    elif damage == "NaN scale":
        tensors["scales"][5] = float("nan")
    elif damage == "unknown quantization":
        metadata["quantization"] = "int4-groups"
    elif damage == "unreadable layers":
        metadata["lora_layers"] = "[[1, 2]]"
    elif damage == "another backbone's layer":
        layers[0][0] = "encoder.layer.9.attention.self.query"
    elif damage == "another rank":  # the config's, not the file's
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, "r": 2}))
    elif damage == "extra tensor":
        tensors["extra"] = torch.zeros(2)
    else:  # both files
        shutil.copy(folder.parent / "original" / FLOAT, folder / FLOAT)
    metadata["lora_layers"] = metadata["lora_layers"] if damage == "unreadable layers" else json.dumps(layers)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("damage, message", [
    ("short values", r"tensor values is I8 of shape \[\d+\], but its lora_layers need I8 of shape"),
    ("NaN scale", r"holds 1 NaN/inf"),
    ("unknown quantization", "records quantization 'int4-groups'"),
    ("unreadable layers", "lora_layers is not a list of"),
    ("another backbone's layer", "targets 'encoder.layer.9.attention.self.query', which is not a linear layer"),
    ("another rank", r"has shape \(4, \d+\), this backbone needs \(2, \d+\)"),
    ("extra tensor", "holds tensors .*'extra'.*exactly 'scales' and 'values'"),
    ("both files", "holds both adapter_model.safetensors and adapter_model.quantized.safetensors"),
])
def test_bad_quantized_files_are_refused_by_name(tiny_backbone_dir, tmp_path, damage, message):
    original = _lora_folder(tiny_backbone_dir, tmp_path / "original", seed=6)
    folder = tmp_path / "damaged"
    shutil.copytree(original, folder)
    quantize_lora_folder(folder, "int8")
    _damage(folder, damage)
    with pytest.raises(AdapterError, match=message):
        AdapterFolder(folder).load_adapter("damaged", _backbone(tiny_backbone_dir), "tiny")
    if damage not in ("NaN scale", "another backbone's layer", "another rank"):  # read without a backbone too
        with pytest.raises(AdapterError, match=message):
            quantize_lora_folder(folder, "float32")


def test_only_lora_folders_and_known_dtypes_are_quantized(tiny_backbone_dir, tmp_path):
    folder = _lora_folder(tiny_backbone_dir, tmp_path / "a", seed=7)
    before = (folder / FLOAT).read_bytes()
    with pytest.raises(AdapterError, match="unknown storage dtype 'int3'; use one of: float32, float16, bfloat16, "
                                           "int8, int4"):
        quantize_lora_folder(folder, "int3")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(AdapterError, match="holds a IA3 adapter; only LoRA adapters are quantized"):
        quantize_lora_folder(folder, "int8")
    assert (folder / FLOAT).read_bytes() == before and not (folder / QUANTIZED).exists()


@pytest.mark.parametrize("rslora", [False, True])
def test_a_lower_rank_keeps_the_best_approximation_of_each_update(tiny_backbone_dir, tmp_path, rslora):
    """Eckart-Young: the stored rank-2 update is off the trained rank-4 one by exactly the dropped singular values,
    with LoRA's scaling unchanged; PEFT reads the reduced folder and computes it."""
    folder = _lora_folder(tiny_backbone_dir, tmp_path / "a", seed=8)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": rslora}))
    scaling = 8 / (4 ** 0.5 if rslora else 4)
    before = {key: m.double() for key, m in load_file(folder / FLOAT).items()}
    reduce_lora_rank(folder, 2)
    after = load_file(folder / FLOAT)
    reduced = json.loads((folder / "adapter_config.json").read_text())
    assert reduced["r"] == 2 and reduced["lora_alpha"] / (2 ** 0.5 if rslora else 2) == pytest.approx(scaling)
    for key_a in (k for k in before if ".lora_A." in k):
        key_b = key_a.replace(".lora_A.", ".lora_B.")
        trained, stored = before[key_b] @ before[key_a], after[key_b].double() @ after[key_a].double()
        assert after[key_a].shape[0] == 2 and after[key_b].shape[1] == 2
        dropped = torch.linalg.svdvals(trained)[2:]
        assert torch.linalg.matrix_norm(trained - stored) == pytest.approx(float(dropped.norm()), rel=1e-4, abs=1e-6)
    model = _peft(tiny_backbone_dir, folder)
    layer = model.base_model.model.encoder.layer[0].attention.self.query
    assert layer.r["default"] == 2 and layer.scaling["default"] == pytest.approx(scaling)
    with pytest.raises(AdapterError, match="rank 2 is not below the adapter's rank 2; give a rank from 1 to 1"):
        reduce_lora_rank(folder, 2)


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
        "task": "sentiment", "adapter": "int8", "head": "float16", "weights_file": QUANTIZED,
        "bytes_before": float_bytes, "bytes_after": AdapterFolder(folder).nbytes()} and report["bytes_after"] < float_bytes
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

    int8_head = runner.invoke(app, ["quantize", "sentiment", "--dtype", "int8", "--head", "int8", "--no-eval",
                                    "-r", str(registry)])
    assert int8_head.exit_code == 0 and json.loads(int8_head.stdout)["head"] == "int8", int8_head.output
    assert "head as int8" in (folder / "README.md").read_text()
    assert _answer(registry)["score"] == pytest.approx(quantized["score"], abs=0.02)
    assert runner.invoke(app, ["quantize", "sentiment", "--dtype", "int8", "--head", "float16", "--no-eval",
                               "-r", str(registry)]).exit_code == 0
    quantized = _answer(registry)  # the head went through int8: what float32 must serve alike below
    wrong_head = runner.invoke(app, ["quantize", "sentiment", "--dtype", "int8", "--head", "int4", "-r", str(registry)])
    assert wrong_head.exit_code != 0 and "a head is stored as float32, float16, int8" in wrong_head.output

    refused = runner.invoke(app, ["quantize", "sentiment", "--dtype", "int3", "-r", str(registry)])
    assert refused.exit_code == 2 and "unknown storage dtype 'int3'" in refused.output, refused.output
    assert _weights(folder) == [QUANTIZED]  # left as it was

    back = runner.invoke(app, ["quantize", "sentiment", "--dtype", "float32", "-r", str(registry)])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["weights_file"] == FLOAT and not (folder / QUANTIZED).exists()
    assert "weights stored as float32, head as float16" in (folder / "README.md").read_text()
    assert _answer(registry) == quantized  # float32 holds the int8 values exactly: served the same
    assert any("lora_A" in name for name, _ in _peft(tiny_backbone_dir, folder).named_parameters())


def test_hub_quantize_stores_a_lower_rank_as_int4(trained_registry, tmp_path):
    registry = _registry_copy(trained_registry, tmp_path)
    folder = registry.parent / "adapters" / "sentiment"
    trained = json.loads((folder / "adapter_config.json").read_text())["r"]
    result = runner.invoke(app, ["quantize", "sentiment", "--dtype", "int4", "--rank", "2", "--no-eval",
                                 "-r", str(registry)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rank"] == 2 and report["bytes_after"] < report["bytes_before"] and trained > 2
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 2
    assert "weights stored as int4 at rank 2 (the trained update's best rank-2 approximation)" in \
        (folder / "README.md").read_text()
    assert _answer(registry)["label"] in ("negative", "positive")
    stored = (folder / QUANTIZED).read_bytes()
    again = runner.invoke(app, ["quantize", "sentiment", "--dtype", "int4", "--rank", "2", "--no-eval",
                                "-r", str(registry)])  # a rerun (make store-adapters twice): already so, left as is
    assert again.exit_code == 0, again.output
    assert (folder / QUANTIZED).read_bytes() == stored
    higher = runner.invoke(app, ["quantize", "sentiment", "--dtype", "int4", "--rank", "3", "-r", str(registry)])
    assert higher.exit_code == 2 and "rank 3 is not below the adapter's rank 2" in higher.output, higher.output


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
            assert _weights(tmp_path / mode / "adapters" / "remote") == [QUANTIZED]
    assert pushed == {"int8": [QUANTIZED], "float32": [FLOAT]}
    store = mine.parent / "adapters"
    assert _weights(store / "pulled") == [QUANTIZED] and _weights(store / "again") == [FLOAT]
    served = _answer(registry)["score"]  # the float32 export holds the int8 values
    pulled = runner.invoke(app, ["run", "pulled", "the movie was good", "-r", str(mine)])
    assert json.loads(pulled.stdout)["score"] == fetched["online"]["score"] == fetched["offline"]["score"] == served
