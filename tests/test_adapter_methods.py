"""Tasks of every kind trained with every adapter method, served together: random mixes of methods and kinds in one
pass equal one-at-a-time answers; PEFT reads the folders of the methods it implements and computes what the hub
serves; cards name the method."""

from __future__ import annotations

import json
import random

import pytest
import torch

import hub
from hub.adapter_folder import AdapterFolder
from hub.methods import METHODS, PeftTraining
from hub.registry import load_registry
from hub.training import train_task

from conftest import METHOD_TASKS as TASKS
from conftest import assert_same_result, random_request, tiny_registry, write_registry

def _method_of(registry_path, task):
    return hub.Hub.load(registry_path).runtime(task).adapter.method


def test_every_method_serves_a_task(methods_registry):
    loaded = hub.Hub.load(methods_registry)
    assert {loaded.runtime(task).adapter.method for task in TASKS} == set(METHODS)
    listed = {t["task"]: t for t in loaded.tasks()}  # what `hub list` and /v1/tasks show, read without loading
    for task in TASKS:
        folder = loaded.registry.adapter_dir(loaded.registry.task(task))
        assert listed[task]["method"] == loaded.runtime(task).adapter.method
        assert listed[task]["bytes"] == AdapterFolder(folder).nbytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_mixes_of_methods_and_kinds_equal_one_at_a_time(methods_registry, seed):
    loaded = hub.Hub.load(methods_registry)
    rng = random.Random(seed)
    requests = [random_request(rng) for _ in range(rng.randint(10, 40))]
    mixed = loaded.run_many(requests)
    alone = [loaded.run(task, value) for task, value in requests]
    for a, b in zip(mixed, alone):
        assert_same_result(a, b)


def test_peft_reads_the_folders_of_the_methods_it_implements(methods_registry, tiny_backbone_dir):
    from peft import PeftModel
    from transformers import BertModel

    from heads import Row

    loaded = hub.Hub.load(methods_registry)
    checked = set()
    for task in TASKS:
        runtime = loaded.runtime(task)
        if not isinstance(METHODS[runtime.adapter.method].training, PeftTraining):
            continue
        folder = loaded.registry.adapter_dir(loaded.registry.task(task))
        peft = PeftModel.from_pretrained(BertModel.from_pretrained(tiny_backbone_dir), str(folder)).eval()
        ids = runtime.backbone.tokenizer("the movie was good")["input_ids"]
        with torch.inference_mode():
            served = runtime.backbone.encode([Row(ids, [0] * len(ids))], [runtime.adapter])["last_hidden_state"][0]
            expected = peft(input_ids=torch.tensor([ids])).last_hidden_state[0]
        assert torch.allclose(served, expected, atol=1e-5), task
        checked.add(runtime.adapter.method)
    assert checked == {name for name, m in METHODS.items() if isinstance(m.training, PeftTraining)}


def test_cards_name_the_method_and_its_bytes(methods_registry):
    loaded = hub.Hub.load(methods_registry)
    for task in TASKS:
        method = METHODS[loaded.runtime(task).adapter.method]
        folder = loaded.registry.adapter_dir(loaded.registry.task(task))
        card = (folder / AdapterFolder.CARD).read_text(encoding="utf-8")
        assert f"- {method.name}\n" in card.split("---")[1]  # a metadata tag
        assert f"adapter method: {method.title} (`{method.name}`)" in card
        assert f"{AdapterFolder(folder).nbytes() - len(card.encode()):,}" in card  # bytes on disk, card excluded


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_task_trained_with_half_precision_storage_serves_what_is_stored(method, tmp_path, tiny_backbone_dir):
    """train.storage: the adapter file in float16 (LoRA: int4 at a reduced rank) and the head in float16; the card's
    metrics are measured on the stored folder, and PEFT (for its methods) reads the same weights the hub serves."""
    from safetensors import safe_open

    from hub.card import card_metrics
    from hub.data import load_split
    from hub.evaluation import evaluate_task

    registry = load_registry(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))
    adapter_storage = "int4" if method == "lora" else "float16"
    reduced = {"rank": 4} if method == "lora" else {}
    train_task(registry, "sentiment", progress=False, adapter={"method": method},
               storage={"adapter": adapter_storage, "head": "float16", **reduced})
    folder = registry.adapter_dir(registry.task("sentiment"))
    weights = AdapterFolder(folder).weights_file()
    with safe_open(str(weights), framework="pt") as stored, safe_open(str(folder / "head.safetensors"), "pt") as head:
        dtypes = {key: stored.get_slice(key).get_dtype() for key in stored.keys()}
        if method == "lora":  # the quantized file: one values tensor (two int4 per byte), one of rank scales
            assert dtypes == {"values": "U8", "scales": "F32"}
            assert json.loads((folder / "adapter_config.json").read_text())["r"] == 4
        else:
            assert set(dtypes.values()) == {"F16"}
        assert {head.get_slice(key).get_dtype() for key in head.keys()} == {"F16"}
    card = (folder / AdapterFolder.CARD).read_text(encoding="utf-8")
    rank = " at rank 4 (the trained update's best rank-4 approximation)" if method == "lora" else ""
    assert f"weights stored as {adapter_storage}{rank}, head as float16" in card
    loaded = hub.Hub(registry)
    dev = load_split(registry, registry.task("sentiment"), "dev")
    assert card_metrics(folder) == pytest.approx(evaluate_task(loaded, "sentiment", dev, progress=False), abs=1e-4)
    if isinstance(METHODS[method].training, PeftTraining) and method != "lora":
        from peft import PeftModel
        from transformers import BertModel

        from heads import Row

        runtime = loaded.runtime("sentiment")
        peft = PeftModel.from_pretrained(BertModel.from_pretrained(tiny_backbone_dir), str(folder)).eval()
        ids = runtime.backbone.tokenizer("the movie was good")["input_ids"]
        with torch.inference_mode():
            served = runtime.backbone.encode([Row(ids, [0] * len(ids))], [runtime.adapter])["last_hidden_state"][0]
            expected = peft(input_ids=torch.tensor([ids])).last_hidden_state[0]
        assert torch.allclose(served, expected, atol=1e-5)


def test_hub_quantize_stores_any_method_in_half_precision_and_refuses_integers_but_for_lora(methods_registry, tmp_path):
    import json
    import shutil

    from typer.testing import CliRunner

    from hub.cli import app

    shutil.copytree(methods_registry.parent, tmp_path / "copy")
    registry = tmp_path / "copy" / methods_registry.name
    loaded = hub.Hub.load(registry)
    task = next(t for t in TASKS if loaded.runtime(t).adapter.method not in ("lora",))
    runner = CliRunner()
    for dtype in ("int8", "int4"):
        refused = runner.invoke(app, ["quantize", task, "--dtype", dtype, "-r", str(registry)])
        assert refused.exit_code == 2 and "int8 and int4 files are LoRA's" in refused.output, refused.output
    no_rank = runner.invoke(app, ["quantize", task, "--dtype", "float16", "--rank", "2", "-r", str(registry)])
    assert no_rank.exit_code == 2 and "which has no rank to" in no_rank.output and "leave --rank out" in no_rank.output
    stored = runner.invoke(app, ["quantize", task, "--dtype", "float16", "--no-eval", "-r", str(registry)])
    assert stored.exit_code == 0, stored.output
    report = json.loads(stored.stdout)
    assert report["bytes_after"] < report["bytes_before"] and report["metrics"] is None
    answer = runner.invoke(app, ["run", task, *_example(task), "-r", str(registry)])
    assert answer.exit_code == 0, answer.output


def _example(task: str) -> list[str]:
    """A command-line input for a tiny task of any kind."""
    return {"sentiment": ["good movie"], "paraphrase": ["a book", "the book"], "similarity": ["it is", "it was"],
            "entities": ["the", "movie", "was", "good"], "reader": ["what is good?", "a fine movie"],
            "spans": ["the", "movie", "was", "good"],
            "relations": ["<e1>good</e1> beats <e2>dull</e2>"]}[task]
