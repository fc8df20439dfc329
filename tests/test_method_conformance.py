"""Every registered adapter method honours the plug-in contract (hub/methods/base.py): the folder PEFT saves for its
default options loads, serves per row exactly as PEFT computes it (rows of other adapters and of none untouched),
moves across dtypes, and its options round-trip through the registry; a method missing a part is refused."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertModel

from heads import Row
from hub.adapter_folder import AdapterFolder
from hub.backbone import Backbone
from hub.methods import METHODS, register_method
from hub.registry import TrainSpec

TEXTS = ["good movie", "the plot was very dull", "a", "love it"]


@pytest.fixture(params=sorted(METHODS))
def method(request):
    return METHODS[request.param]


def _peft_folder(method, backbone_dir, folder, seed):
    """What `hub train` saves for the method's default options, with random (non-identity) adapter weights; returns
    the trained model (PEFT's, or the method's reference module) as the reference forward."""
    torch.manual_seed(seed)
    model = method.training.wrap(BertModel.from_pretrained(backbone_dir), method.options(method=method.name))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    method.training.save(model, folder, "tiny")
    return model.eval()


def test_per_row_serving_equals_peft(method, tiny_backbone_dir, tmp_path):
    backbone = Backbone(str(tiny_backbone_dir), BertModel.from_pretrained(tiny_backbone_dir).eval(),
                        AutoTokenizer.from_pretrained(tiny_backbone_dir))
    references = [_peft_folder(method, tiny_backbone_dir, tmp_path / f"a{i}", seed=i) for i in range(2)]
    loaded = [AdapterFolder(tmp_path / f"a{i}").load_adapter(f"a{i}", backbone, "tiny") for i in range(2)]
    assert all(w.method == method.name and w.nbytes > 0 and w.paths for w in loaded)
    assert all(backbone.linear_layer(path) is not None for w in loaded for path in w.paths)
    encoded = [backbone.tokenizer(text)["input_ids"] for text in TEXTS]
    rows = [Row(ids, [0] * len(ids)) for ids in encoded]
    owners = [loaded[0], None, loaded[1], loaded[0]]
    with torch.inference_mode():
        mixed = backbone.encode(rows, owners)["last_hidden_state"]
        for i, (ids, owner) in enumerate(zip(encoded, owners)):
            model = backbone.model if owner is None else references[loaded.index(owner)]
            alone = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
            assert torch.allclose(mixed[i, : len(ids)], alone, atol=1e-5), (i, (mixed[i, : len(ids)] - alone).abs().max())


def test_weights_move_across_dtypes(method, tiny_backbone_dir, tmp_path):
    backbone = Backbone(str(tiny_backbone_dir), BertModel.from_pretrained(tiny_backbone_dir).eval(),
                        AutoTokenizer.from_pretrained(tiny_backbone_dir))
    _peft_folder(method, tiny_backbone_dir, tmp_path / "a", seed=0)
    weights = AdapterFolder(tmp_path / "a").load_adapter("a", backbone, "tiny")
    half = weights.to(torch.device("cpu"), torch.float16)
    assert half.nbytes * 2 == weights.nbytes and set(half.paths) == set(weights.paths)
    assert weights.to(torch.device("cpu")) is weights


def test_options_round_trip_through_the_registry(method):
    recipe = TrainSpec.model_validate({"adapter": {"method": method.name}})
    assert isinstance(recipe.adapter, method.options)
    assert TrainSpec.model_validate(recipe.model_dump()) == recipe
    with pytest.raises(ValueError, match="unknown adapter method"):
        TrainSpec.model_validate({"adapter": {"method": "no-such-method"}})


def test_a_method_missing_a_part_is_refused():
    lora = METHODS["lora"]
    with pytest.raises(TypeError, match="lacks row_hook"):
        register_method(name="half", peft_type="HALF", options=lora.options, load=lora.load, training=lora.training)
    with pytest.raises(TypeError, match="registered twice"):
        register_method(name="lora2", peft_type="LORA", options=lora.options, load=lora.load, row_hook=lora.row_hook,
                        training=lora.training)


def test_rows_of_every_method_share_one_pass(tiny_backbone_dir, tmp_path):
    """Random mixes of rows of every method (two adapters each) and of none, in one pass: each row equals its
    adapter's own reference forward (PEFT's, or the method's reference module) run alone."""
    import random

    backbone = Backbone(str(tiny_backbone_dir), BertModel.from_pretrained(tiny_backbone_dir).eval(),
                        AutoTokenizer.from_pretrained(tiny_backbone_dir))
    adapters, references = [None], [backbone.model]
    for name in sorted(METHODS):
        for i in range(2):
            folder = tmp_path / f"{name}{i}"
            references.append(_peft_folder(METHODS[name], tiny_backbone_dir, folder, seed=10 + i))
            adapters.append(AdapterFolder(folder).load_adapter(f"{name}{i}", backbone, "tiny"))
    rng = random.Random(0)
    for _ in range(3):
        owners = [rng.randrange(len(adapters)) for _ in range(2 * len(adapters))]
        texts = [" ".join(rng.choice(TEXTS) for _ in range(rng.randint(1, 3))) for _ in owners]
        encoded = [backbone.tokenizer(text)["input_ids"] for text in texts]
        with torch.inference_mode():
            mixed = backbone.encode([Row(ids, [0] * len(ids)) for ids in encoded],
                                    [adapters[o] for o in owners])["last_hidden_state"]
            for i, (ids, owner) in enumerate(zip(encoded, owners)):
                alone = references[owner](input_ids=torch.tensor([ids])).last_hidden_state[0]
                assert torch.allclose(mixed[i, : len(ids)], alone, atol=1e-5), (owner, (mixed[i, : len(ids)] - alone).abs().max())


def test_options_a_method_cannot_serve_are_refused_by_name(method, tiny_backbone_dir, tmp_path):
    import json

    from hub.errors import AdapterError

    backbone = Backbone(str(tiny_backbone_dir), BertModel.from_pretrained(tiny_backbone_dir).eval(),
                        AutoTokenizer.from_pretrained(tiny_backbone_dir))
    _peft_folder(method, tiny_backbone_dir, tmp_path / "a", seed=0)
    config_file = tmp_path / "a" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "modules_to_save": ["classifier"]}))
    with pytest.raises(AdapterError, match="modules_to_save"):
        AdapterFolder(tmp_path / "a").load_adapter("a", backbone, "tiny")


def test_a_half_precision_file_stays_half_in_memory_and_serves_as_stored(method, tiny_backbone_dir, tmp_path):
    """A float16 weights file served by a float32 backbone serves within float16 rounding of the float32 file, and in
    memory takes its stored width, not twice it (that it equals PEFT reading the same file: test_adapter_methods;
    int8 LoRA: test_quantized_lora)."""
    backbone = Backbone(str(tiny_backbone_dir), BertModel.from_pretrained(tiny_backbone_dir).eval(),
                        AutoTokenizer.from_pretrained(tiny_backbone_dir))
    _peft_folder(method, tiny_backbone_dir, tmp_path / "a", seed=5)
    full = AdapterFolder(tmp_path / "a").load_adapter("full", backbone, "tiny")
    method.store(tmp_path / "a", "float16")
    half = AdapterFolder(tmp_path / "a").load_adapter("half", backbone, "tiny")
    assert half.nbytes <= 0.55 * full.nbytes  # LoRA: plus a float32 scale per rank channel
    ids = backbone.tokenizer("the plot was very dull")["input_ids"]
    with torch.inference_mode():
        served = backbone.encode([Row(ids, [0] * len(ids))] * 2, [half, full])["last_hidden_state"]
    assert served.dtype == torch.float32 and torch.allclose(served[0], served[1], atol=5e-3)


def test_adapters_of_one_shape_share_their_tables(method, tiny_backbone_dir, tmp_path):
    """Two adapters of the same shape hold no per-layer objects of their own (a thousand resident adapters add
    nothing per layer for the garbage collector to walk): their layout / places tables are one object."""
    backbone = Backbone(str(tiny_backbone_dir), BertModel.from_pretrained(tiny_backbone_dir).eval(),
                        AutoTokenizer.from_pretrained(tiny_backbone_dir))
    loaded = []
    for i in range(2):
        _peft_folder(method, tiny_backbone_dir, tmp_path / f"a{i}", seed=i)
        loaded.append(AdapterFolder(tmp_path / f"a{i}").load_adapter(f"a{i}", backbone, "tiny"))
    assert _shape_table(loaded[0]) is _shape_table(loaded[1])


def _shape_table(weights):
    """Where an adapter's per-layer places live: LoRA's layout, the packed methods' places."""
    if hasattr(weights, "layout"):
        return weights.layout
    packed = weights.vectors if hasattr(weights, "vectors") else weights.tensors
    return packed.places


def test_every_method_serves_per_row_on_an_int8_backbone(method, tiny_backbone_dir, tmp_path):
    """dtype int8 (hub/int8.py): each method's hooks on the int8 linear layers; a row in a mixed pass as alone (its
    int8 activations are scaled per token), and close to the same adapter on the float32 backbone."""
    from hub.int8 import quantize_linear_layers

    def backbone(int8: bool) -> Backbone:
        model = BertModel.from_pretrained(tiny_backbone_dir).eval()
        if int8:
            quantize_linear_layers(model)
        return Backbone(str(tiny_backbone_dir), model, AutoTokenizer.from_pretrained(tiny_backbone_dir))

    int8, float32 = backbone(True), backbone(False)
    for i in range(2):
        _peft_folder(method, tiny_backbone_dir, tmp_path / f"a{i}", seed=i)
    adapters = {b: [AdapterFolder(tmp_path / f"a{i}").load_adapter(f"a{i}", b, "tiny") for i in range(2)]
                for b in (int8, float32)}
    encoded = [int8.tokenizer(text)["input_ids"] for text in TEXTS]
    rows = [Row(ids, [0] * len(ids)) for ids in encoded]
    owners = [0, None, 1, 0]
    with torch.inference_mode():
        mixed = int8.encode(rows, [None if o is None else adapters[int8][o] for o in owners])["last_hidden_state"]
        for i, (ids, owner) in enumerate(zip(encoded, owners)):
            alone = {b: b.encode([rows[i]], [None if owner is None else adapters[b][owner]])["last_hidden_state"][0]
                     for b in (int8, float32)}
            assert torch.allclose(mixed[i, : len(ids)], alone[int8], atol=1e-3)
            cosine = torch.nn.functional.cosine_similarity(alone[int8], alone[float32], dim=-1)
            assert cosine.min() > 0.99, (i, cosine)
        effect = {b: (b.encode([rows[0]], [adapters[b][0]])["last_hidden_state"][0]
                      - b.encode([rows[0]])["last_hidden_state"][0]).abs().max() for b in (int8, float32)}
        assert effect[int8] > 0.5 * effect[float32] > 0  # the adapter acts on the int8 backbone as on float32
