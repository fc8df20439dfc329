"""Bottleneck adapters (hub/methods/bottleneck): both AdapterHub configs serve per row exactly as the trained module
computes, beside LoRA and at mixed widths in one pass; broken folders and options are refused by name; a real
`hub train` run writes a folder that serves."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BertModel

import hub
from heads import Row
from hub.adapter_folder import AdapterFolder
from hub.backbone import Backbone
from hub.errors import AdapterError
from hub.methods import METHODS
from hub.methods.bottleneck.options import BottleneckOptions
from hub.methods.bottleneck.training import BottleneckLinear, BottleneckTraining
from hub.registry import TrainSpec, load_registry
from hub.training import train_task

from conftest import tiny_registry, write_registry

TEXTS = ["good movie", "the plot was very dull", "a", "love it", "this book is great"]
PREFIX = "base_model.model."


def _backbone(backbone_dir) -> Backbone:
    return Backbone(str(backbone_dir), BertModel.from_pretrained(backbone_dir).eval(),
                    AutoTokenizer.from_pretrained(backbone_dir))


def _trained(method: str, options, backbone_dir, folder, seed: int):
    """A folder as `hub train` saves it, with random (non-identity) weights; returns the wrapped model (reference)."""
    torch.manual_seed(seed)
    training = METHODS[method].training
    model = training.wrap(BertModel.from_pretrained(backbone_dir), options)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    training.save(model, folder, "tiny")
    return model.eval()


def _bottleneck(backbone_dir, folder, seed: int = 0, **options):
    return _trained("bottleneck", BottleneckOptions(**options), backbone_dir, folder, seed)


def _assert_rows_equal_references(backbone: Backbone, adapters: list, references: list, owners: list[int]) -> None:
    """One mixed pass, row i with adapters[owners[i]], equals references[owners[i]] run on that row alone."""
    encoded = [backbone.tokenizer(TEXTS[i % len(TEXTS)])["input_ids"] for i in range(len(owners))]
    with torch.inference_mode():
        mixed = backbone.encode([Row(ids, [0] * len(ids)) for ids in encoded],
                                [adapters[o] for o in owners])["last_hidden_state"]
        for i, (ids, owner) in enumerate(zip(encoded, owners)):
            alone = references[owner](input_ids=torch.tensor([ids])).last_hidden_state[0]
            gap = (mixed[i, : len(ids)] - alone).abs().max()
            assert gap < 1e-5, (i, owner, gap)


@pytest.mark.parametrize("config", ["seq_bn", "double_seq_bn"])
def test_both_configs_serve_equal_to_the_reference_module(config, tiny_backbone_dir, tmp_path):
    backbone = _backbone(tiny_backbone_dir)
    reference = _bottleneck(tiny_backbone_dir, tmp_path / "a", config=config, reduction_factor=4)
    weights = AdapterFolder(tmp_path / "a").load_adapter("a", backbone, "tiny")
    layers = backbone.model.config.num_hidden_layers
    targets = {f"encoder.layer.{i}.output.dense" for i in range(layers)}
    if config == "double_seq_bn":
        targets |= {f"encoder.layer.{i}.attention.output.dense" for i in range(layers)}
    assert weights.paths == targets and weights.width == 8
    assert weights.non_linearity == ("relu" if config == "seq_bn" else "swish")
    ids = torch.tensor([backbone.tokenizer("good movie")["input_ids"]])
    with torch.no_grad():
        assert not torch.allclose(reference(input_ids=ids).last_hidden_state, backbone.model(ids).last_hidden_state)
    _assert_rows_equal_references(backbone, [None, weights], [backbone.model, reference], [1, 0, 1, 1, 0])


def test_a_fresh_adapter_is_the_identity_and_only_it_trains(tiny_backbone_dir):
    base = BertModel.from_pretrained(tiny_backbone_dir).eval()
    model = BottleneckTraining().wrap(BertModel.from_pretrained(tiny_backbone_dir),
                                      BottleneckOptions(config="double_seq_bn", reduction_factor=8))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter_down." in name or ".adapter_up." in name for name in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * 2 * (32 * 4 + 4 + 4 * 32 + 32)
    assert isinstance(model.encoder.layer[0].attention.output.dense, BottleneckLinear)
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids).last_hidden_state, base(input_ids=ids).last_hidden_state)
    with pytest.raises(ValueError, match="already holds bottleneck adapters"):
        BottleneckTraining().wrap(model, BottleneckOptions())


def test_a_bottleneck_and_a_lora_adapter_share_one_pass(tiny_backbone_dir, tmp_path):
    backbone = _backbone(tiny_backbone_dir)
    references = [backbone.model, _bottleneck(tiny_backbone_dir, tmp_path / "bn", config="double_seq_bn"),
                  _trained("lora", METHODS["lora"].options(method="lora"), tiny_backbone_dir, tmp_path / "lora", 1)]
    adapters = [None, *(AdapterFolder(tmp_path / name).load_adapter(name, backbone, "tiny") for name in ("bn", "lora"))]
    _assert_rows_equal_references(backbone, adapters, references, [1, 2, 0, 2, 1, 1])


def test_mixed_reduction_factors_and_non_linearities_in_one_pass(tiny_backbone_dir, tmp_path):
    backbone = _backbone(tiny_backbone_dir)
    variants = [{"reduction_factor": 2}, {"reduction_factor": 16, "non_linearity": "gelu"},
                {"config": "double_seq_bn", "reduction_factor": 64, "non_linearity": "tanh"},
                {"config": "double_seq_bn", "reduction_factor": 4}]
    references, adapters = [backbone.model], [None]
    for i, options in enumerate(variants):
        references.append(_bottleneck(tiny_backbone_dir, tmp_path / f"a{i}", seed=i, **options))
        adapters.append(AdapterFolder(tmp_path / f"a{i}").load_adapter(f"a{i}", backbone, "tiny"))
    assert [a.width for a in adapters[1:]] == [16, 2, 1, 8]
    _assert_rows_equal_references(backbone, adapters, references, [1, 2, 3, 0, 4, 2, 1, 3])
    _assert_rows_equal_references(backbone, adapters, references, [3, 3, 3])


def test_serves_a_half_precision_backbone_and_refuses_grad_mode(tiny_backbone_dir, tmp_path):
    reference = _bottleneck(tiny_backbone_dir, tmp_path / "a", config="double_seq_bn")
    backbone = _backbone(tiny_backbone_dir)
    backbone.model.to(torch.bfloat16)
    weights = AdapterFolder(tmp_path / "a").load_adapter("a", backbone, "tiny")
    assert weights.tensors.buffer.dtype == torch.bfloat16
    ids = backbone.tokenizer("the plot was very dull")["input_ids"]
    with torch.inference_mode():
        served = backbone.encode([Row(ids, [0] * len(ids))], [weights])["last_hidden_state"][0]
        expected = reference(input_ids=torch.tensor([ids])).last_hidden_state[0]
    assert (served - expected).abs().max() < 0.1
    with pytest.raises(RuntimeError, match="inference only"):
        backbone.encode([Row(ids, [0] * len(ids))], [weights])


def _config(**changes):
    """An edit of a folder's adapter_config.json."""
    def edit(folder):
        path = folder / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return edit


def _tensors(change):
    """An edit of a folder's adapter_model.safetensors: `change(tensors)` in place."""
    def edit(folder):
        path = folder / "adapter_model.safetensors"
        tensors = load_file(str(path))
        change(tensors)
        save_file(tensors, str(path))

    return edit


def _drop(prefix: str):
    return _tensors(lambda tensors: [tensors.pop(key) for key in list(tensors) if key.startswith(prefix)])


def _put(key: str, tensor: torch.Tensor):
    return _tensors(lambda tensors: tensors.update({key: tensor}))


LAYER = f"{PREFIX}encoder.layer.0.output.dense"
BROKEN = {  # problem -> (edit of a double_seq_bn folder of width 2, what the AdapterError says)
    "wrong shape": (_put(f"{LAYER}.adapter_up.weight", torch.zeros(32, 3)),
                    r"adapter_up\.weight has shape \[32, 3\].*need \[32, 2\]"),
    "missing up half": (_drop(f"{LAYER}.adapter_up."), r"encoder\.layer\.0\.output\.dense lack some of adapter_down"),
    "missing layer": (_drop(f"{LAYER}."), "target_modules"),
    "foreign tensor": (_put(f"{LAYER}.lora_A.weight", torch.zeros(2, 32)), "not a bottleneck adapter weight"),
    "unknown non_linearity": (_config(non_linearity="sigmoid"), "non_linearity='sigmoid'"),
    "unknown config": (_config(config="par_bn"), "config='par_bn'"),
    "bad bottleneck_size": (_config(bottleneck_size=0), "bottleneck_size >= 1"),
    "size and shapes disagree": (_config(bottleneck_size=4), "bottleneck_size=4 need"),
    "layer the config does not adapt": (_config(config="seq_bn"), "config 'seq_bn' does not adapt"),
    "modules_to_save": (_config(modules_to_save=["classifier"]), "modules_to_save"),
}


@pytest.mark.parametrize("problem", sorted(BROKEN))
def test_broken_folders_are_refused_naming_the_problem(problem, tiny_backbone_dir, tmp_path):
    _bottleneck(tiny_backbone_dir, tmp_path / "a", config="double_seq_bn")
    edit, message = BROKEN[problem]
    edit(tmp_path / "a")
    with pytest.raises(AdapterError, match=message):
        AdapterFolder(tmp_path / "a").load_adapter("a", _backbone(tiny_backbone_dir), "tiny")


def test_options_are_validated_with_adapterhub_defaults():
    def adapter(**options):
        return TrainSpec.model_validate({"adapter": {"method": "bottleneck", **options}}).adapter

    assert adapter() == BottleneckOptions(config="seq_bn", reduction_factor=16, non_linearity="relu")
    assert adapter(config="double_seq_bn").non_linearity == "swish"
    assert adapter(config="double_seq_bn", non_linearity="gelu").non_linearity == "gelu"
    for bad in ({"reduction_factor": 0}, {"reduction_factor": 1.5}, {"config": "pfeiffer"},
                {"non_linearity": "sigmoid"}, {"bottleneck_size": 8}):
        with pytest.raises(ValidationError):
            adapter(**bad)
    huge = BottleneckTraining().wrap(BertModel(BertModel.config_class(hidden_size=32, num_hidden_layers=1,
                                                                       num_attention_heads=2, intermediate_size=64)),
                                     adapter(reduction_factor=1000))
    assert huge.encoder.layer[0].output.dense.adapter_down.out_features == 1  # width at least 1


def test_a_trained_bottleneck_task_serves(tmp_path, tiny_backbone_dir, monkeypatch):
    document = tiny_registry(tmp_path, tiny_backbone_dir)
    document["tasks"] = [task for task in document["tasks"] if task["name"] == "sentiment"]
    train = document["tasks"][0]["train"]
    train.pop("lora")
    train["adapter"] = {"method": "bottleneck", "config": "double_seq_bn", "reduction_factor": 4}
    path = write_registry(tmp_path, document)
    captured = {}
    original = BottleneckTraining.wrap

    def spy(self, model, options):
        captured["before"] = {k: v.clone() for k, v in model.state_dict().items()}
        captured["model"] = original(self, model, options)
        return captured["model"]

    monkeypatch.setattr(BottleneckTraining, "wrap", spy)
    report = train_task(load_registry(path), "sentiment", progress=False)
    after = captured["model"].state_dict()
    base = {key.replace(".base_layer", ""): value for key, value in after.items() if ".adapter_" not in key}
    assert base.keys() == captured["before"].keys()
    assert all(torch.equal(base[key], value) for key, value in captured["before"].items())  # the backbone is frozen
    assert any(v.abs().sum() > 0 for k, v in after.items() if ".adapter_up." in k)  # up starts at zero: it trained
    assert report["trainable_parameters"] == 4 * (32 * 8 + 8 + 8 * 32 + 32) + 32 * 2 + 2
    folder = tmp_path / "adapters" / "sentiment"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "head.safetensors", "head_config.json"]
    config = json.loads((folder / "adapter_config.json").read_text())
    targets = sorted(f"encoder.layer.{i}.{part}output.dense" for i in range(2) for part in ("", "attention."))
    assert config == {"peft_type": "BOTTLENECK", "base_model_name_or_path": "tests/tiny-bert",
                      "config": "double_seq_bn", "reduction_factor": 4, "non_linearity": "swish",
                      "bottleneck_size": 8, "target_modules": targets}
    served = hub.Hub.load(path)
    assert served.runtime("sentiment").adapter.method == "bottleneck"
    answer = served.run("sentiment", "a great movie")
    assert answer["label"] in ("negative", "positive") and 0 <= answer["score"] <= 1
