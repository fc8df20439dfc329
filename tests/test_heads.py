"""The head contract: pooling, forward/loss/decode, save/load with checks."""

from __future__ import annotations

import json

import pytest
import torch

from heads import KINDS, Head, HeadLoadError, pool


def _features(n=3, t=5, h=8):
    torch.manual_seed(0)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[0, 2:] = 0
    return {"last_hidden_state": torch.randn(n, t, h), "attention_mask": mask, "pooler_output": torch.randn(n, h)}


def test_mean_and_max_pooling_ignore_padding():
    features = _features()
    hidden = features["last_hidden_state"]
    assert torch.allclose(pool(features, "mean")[0], hidden[0, :2].mean(0))
    assert torch.allclose(pool(features, "max")[0], hidden[0, :2].amax(0))
    assert torch.equal(pool(features, "cls"), hidden[:, 0])
    assert torch.equal(pool(features, "pooler"), features["pooler_output"])
    changed = {**features, "last_hidden_state": hidden.clone()}
    changed["last_hidden_state"][0, 3] = 1e6  # a padded position
    assert torch.allclose(pool(changed, "mean")[0], pool(features, "mean")[0])


def test_classification_forward_loss_decode():
    head = KINDS["classification"].head.from_options({"pooling": "mean"}, hidden_size=8, labels=["a", "b", "c"]).eval()
    outputs = head(_features())
    assert outputs["logits"].shape == (3, 3)
    targets = head.targets(["c", "a", "b"])
    assert targets.tolist() == [2, 0, 1]
    assert head.loss(outputs, targets).item() > 0
    decoded = head.decode(outputs)
    assert [d["label"] for d in decoded] == [["a", "b", "c"][i] for i in outputs["logits"].argmax(-1).tolist()]
    assert all(0 < d["score"] <= 1 for d in decoded)
    with pytest.raises(ValueError, match="not among the task's labels"):
        head.targets(["a", "zzz"])


def test_regression_decode_and_targets():
    head = KINDS["regression"].head.from_options({"projection": False}, hidden_size=8, labels=None).eval()
    outputs = head(_features())
    assert outputs["logits"].shape == (3, 1)
    assert [d["value"] for d in head.decode(outputs)] == pytest.approx(outputs["logits"].squeeze(-1).tolist(), abs=1e-5)
    assert head.targets(["1.5", 2]).tolist() == [1.5, 2.0]
    with pytest.raises(ValueError, match="must be numbers"):
        head.targets(["high"])


@pytest.mark.parametrize("kind, options, labels", [
    ("classification", {"pooling": "mean"}, ["neg", "pos", "mixed"]),
    ("classification", {"pooling": "cls"}, ["a", "b", "c"]),
    ("regression", {"pooling": "max"}, None),
])
def test_heads_of_one_batch_key_answer_together_as_one_by_one(kind, options, labels):
    """Rows of several tasks' heads in one forward_many/decode_many give each row its own head's answer."""
    features = _features(n=6)
    heads = []
    for seed in range(3):
        torch.manual_seed(seed)
        heads.append(KINDS[kind].head.from_options(options, 8, labels and [f"{label}{seed}" for label in labels]).eval())
    assert len({h.batch_key() for h in heads}) == 1 and heads[0].batch_key() is not None
    owner = [2, 0, 1, 2, 2, 0]
    together = type(heads[0]).decode_many(heads, owner, type(heads[0]).forward_many(heads, torch.tensor(owner), features))
    for row, (o, answer) in enumerate(zip(owner, together)):
        alone = heads[o].decode(heads[o]({k: v[row:row + 1] for k, v in features.items()}))[0]
        assert answer.keys() == alone.keys()
        for key in answer:
            assert answer[key] == (alone[key] if isinstance(alone[key], str) else pytest.approx(alone[key], abs=1e-5))


def test_heads_that_cannot_answer_together_have_no_batch_key():
    for options in ({"pair": "siamese"}, {"projection": True}, {"layers": "last4"}):
        assert KINDS["classification"].head.from_options(options, 8, ["a", "b"], num_layers=4).batch_key() is None
    assert KINDS["classification"].head.from_options({}, 8, ["a", "b"]).batch_key() != KINDS["regression"].head.from_options({}, 8, None).batch_key()


def test_save_load_round_trip(tmp_path):
    head = KINDS["classification"].head.from_options({"pooling": "cls", "dropout": 0.2}, hidden_size=8, labels=["x", "y"]).eval()
    head.save(tmp_path)
    loaded = Head.load(tmp_path)
    assert loaded.config == head.config
    features = _features()
    assert torch.equal(loaded(features)["logits"], head(features)["logits"])


def test_load_refuses_mismatched_weights_and_bad_config(tmp_path):
    head = KINDS["classification"].head.from_options({}, hidden_size=8, labels=["x", "y"])
    head.save(tmp_path)
    config = json.loads((tmp_path / "head_config.json").read_text())
    (tmp_path / "head_config.json").write_text(json.dumps({**config, "labels": ["x", "y", "z"]}))
    with pytest.raises(HeadLoadError, match="has shape"):
        Head.load(tmp_path)
    (tmp_path / "head_config.json").write_text(json.dumps({**config, "kind": "tagging-someday"}))
    with pytest.raises(HeadLoadError, match="unknown head kind"):
        Head.load(tmp_path)
    (tmp_path / "head_config.json").write_text(json.dumps({**config, "pooling": "sum"}))
    with pytest.raises(HeadLoadError, match="invalid config"):
        Head.load(tmp_path)
    (tmp_path / "head_config.json").write_text(json.dumps(config))
    (tmp_path / "head.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(HeadLoadError, match="cannot read"):
        Head.load(tmp_path)


def _layered_features(n=3, t=5, h=8, layers=6):
    features = _features(n, t, h)
    torch.manual_seed(2)
    features["hidden_states"] = torch.randn(n, layers + 1, t, h)
    features["last_hidden_state"] = features["hidden_states"][:, -1]
    return features


def test_last_four_layers_are_averaged():
    head = KINDS["classification"].head.from_options({"layers": "last4"}, hidden_size=8, labels=["a", "b"], num_layers=6).eval()
    features = _layered_features()
    expected = head.predict({**features, "last_hidden_state": features["hidden_states"][:, -4:].mean(1)})
    assert torch.allclose(head(features)["logits"], expected["logits"])
    assert not torch.allclose(head(features)["logits"], head.predict(features)["logits"])


def test_learned_layer_mix_trains_and_round_trips(tmp_path):
    head = KINDS["classification"].head.from_options({"layers": "mix"}, hidden_size=8, labels=["a", "b"], num_layers=6)
    features = _layered_features()
    uniform = head.eval().predict({**features, "last_hidden_state": features["hidden_states"].mean(1)})
    assert torch.allclose(head(features)["logits"], uniform["logits"], atol=1e-6)  # starts as the plain mean
    head.train()
    head.loss(head(features), head.targets(["a", "b", "a"])).backward()
    assert head.layer_weights.grad is not None and head.layer_weights.grad.abs().sum() > 0
    with torch.no_grad():
        head.layer_weights[3] = 2.0
    head.eval().save(tmp_path)
    loaded = Head.load(tmp_path)
    assert torch.equal(loaded.layer_weights, head.layer_weights)
    assert torch.allclose(loaded(features)["logits"], head(features)["logits"])
    with pytest.raises(ValueError, match="at least 4 layers"):
        KINDS["classification"].head.from_options({"layers": "last4"}, hidden_size=8, labels=["a", "b"], num_layers=2)
