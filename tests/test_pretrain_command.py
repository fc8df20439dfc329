"""`hub pretrain` (hub/pretraining/train.py, the CLI): a domain adapter trained on raw text over the tiny backbone,
written as a folder PEFT reads, with the objective heads and a card whose held-out accuracy rose; bad input refused
with nothing written."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel
from typer.testing import CliRunner

from hub.cli import app

from conftest import FILLER, tiny_registry, write_registry


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_backbone_dir):
    folder = tmp_path_factory.mktemp("pretrain")
    registry = write_registry(folder, tiny_registry(folder, tiny_backbone_dir))
    rng = random.Random(0)
    lines = [" ".join(FILLER[(start + i) % len(FILLER)] for i in range(12)) for start in
             (rng.choice([0, 5]) for _ in range(240))]
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder, registry, corpus


def _run(*args: str):
    return CliRunner().invoke(app, ["pretrain", *args])


def test_pretrain_writes_an_adapter_folder_whose_held_out_accuracy_rose(setup, tiny_backbone_dir):
    folder, registry, corpus = setup
    out = folder / "domain"
    result = _run(str(out), "--text", str(corpus), "--backbone", "tiny", "--registry", str(registry), "--epochs", "8",
                  "--learning-rate", "1e-2", "--max-length", "32")
    assert result.exit_code == 0, result.output
    card = json.loads((out / "pretraining.json").read_text())
    accuracy, perplexity = card["held_out"]["accuracy"], card["held_out"]["perplexity"]
    assert accuracy["after"] > accuracy["before"] + 0.2, accuracy
    assert perplexity["after"] < perplexity["before"] / 2, perplexity
    assert card["objective"] == "mlm" and card["corpus"]["held_out_texts"] == 12 and card["steps"] > 0
    assert f"{accuracy['before']:.3f} -> {accuracy['after']:.3f}" in result.output
    assert not (out / "pretraining_heads.safetensors").exists()  # only the boundary objective has a head beside
    head_config = json.loads((out / "head_config.json").read_text())
    assert head_config["kind"] == "fill_mask" and head_config["vocab_size"] == BertModel.from_pretrained(
        tiny_backbone_dir).config.vocab_size
    heads = load_file(str(out / "head.safetensors"))
    vocab = heads["bias"].shape[0]
    assert not any(t.dim() == 2 and vocab in t.shape for t in heads.values())  # no copy of the word embeddings
    readme = (out / "README.md").read_text()
    assert "pipeline_tag: fill-mask" in readme and f"{accuracy['after']:.4f}" in readme
    from hub.card import card_metrics, card_report

    assert card_metrics(out) == {"masked_token_accuracy": accuracy["after"]}  # a Hub eval result, as task cards
    report = card_report(out)
    files = sum(f.stat().st_size for f in out.iterdir() if f.name not in ("README.md", "pretraining.json"))
    assert report["adapter_bytes"] == files and card["bytes"] == sum(f.stat().st_size for f in out.iterdir())
    trained = sum(t.numel() for name in ("adapter_model.safetensors", "head.safetensors")
                  for t in load_file(str(out / name)).values())
    assert report["trainable_parameters"] == card["trainable_parameters"] == trained
    assert report["train_examples"] == card["corpus"]["train_texts"] and report["train_seconds"] > 0
    assert report["command"] == (f"hub pretrain {out} --text {corpus} --backbone tiny --registry {registry} "
                                 "--epochs 8.0 --learning-rate 0.01 --max-length 32")  # as given, defaults left out
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(BertModel.from_pretrained(tiny_backbone_dir), str(out))  # PEFT reads it
    assert any("lora_A" in name for name, _ in adapted.named_parameters())


def test_span_masking_with_the_boundary_objective_saves_its_head(setup):
    folder, registry, corpus = setup
    out = folder / "spans"
    result = _run(str(out), "--text", str(corpus), "--backbone", "tiny", "--registry", str(registry),
                  "--objective", "span", "--span-boundary", "--max-length", "32", "--adapter", "{method: lora, r: 2}")
    assert result.exit_code == 0, result.output
    heads = load_file(str(out / "pretraining_heads.safetensors"))
    assert heads and all(k.startswith("sbo.") for k in heads) and heads["sbo.positions.weight"].dtype == torch.float32
    card = json.loads((out / "pretraining.json").read_text())
    assert card["recipe"]["span_boundary"] and card["recipe"]["adapter"]["r"] == 2


def test_a_low_rank_prediction_head_is_saved_with_its_rank(setup):
    folder, registry, corpus = setup
    out = folder / "low_rank"
    result = _run(str(out), "--text", str(corpus), "--backbone", "tiny", "--registry", str(registry),
                  "--max-length", "32", "--transform-rank", "2")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "head_config.json").read_text())["transform_rank"] == 2
    heads = load_file(str(out / "head.safetensors"))
    hidden = heads["transform.3.weight"].shape[0]  # the layer norm after the two dense layers and the GELU
    assert heads["transform.0.weight"].shape == (2, hidden) and heads["transform.1.weight"].shape == (hidden, 2)
    assert json.loads((out / "pretraining.json").read_text())["recipe"]["transform_rank"] == 2


@pytest.mark.parametrize("extra, content, message", [
    ((), "only one line\n", "1 non-blank text"),
    ((), "\u200b\n\u200b\u200b\n", "0 of 2 texts have a token to mask"),
    (("--text-field", "t"), '{"t": "fine text"}\n{"t": "bad \\ud800 half"}\n',
     "text 2 .* has a lone surrogate \\(U\\+D800\\) at character 4"),
    (("--objective", "bert"), None, "--objective 'bert' is not one of mlm, whole_word, span"),
    (("--span-boundary",), None, "use it with --objective span"),
    (("--adapter", "{method: nope}"), None, "unknown adapter method 'nope'"),
    (("--adapter", "{method: lora, r: 0}"), None, "adapter .*r"),
])
def test_bad_input_is_refused_and_nothing_is_written(setup, extra, content, message):
    folder, registry, corpus = setup
    if content is not None:
        corpus = folder / ("bad.jsonl" if content.startswith("{") else "bad.txt")
        corpus.write_text(content, encoding="utf-8")
    out = folder / "refused"
    result = _run(str(out), "--text", str(corpus), "--backbone", "tiny", "--registry", str(registry), *extra)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert re.search(message, " ".join(result.output.split())), result.output  # the console wraps lines
    assert not out.exists() and not list(folder.glob(".refused*"))


def test_a_tasks_own_training_texts_are_a_corpus(setup):
    from hub.data import load_split
    from hub.pretraining.corpus import task_texts
    from hub.registry import load_registry

    folder, registry, _ = setup
    loaded = load_registry(registry)
    pairs = task_texts(loaded, "paraphrase")
    examples = load_split(loaded, loaded.task("paraphrase"), "train")
    assert set(pairs) == {e[field].strip() for e in examples for field in ("first", "second")}  # no label, no repeat
    assert len(pairs) == len(set(pairs))
    tagged = task_texts(loaded, "entities")
    assert tagged[0] == " ".join(load_split(loaded, loaded.task("entities"), "train")[0]["tokens"])
    contexts = task_texts(loaded, "reader")
    assert "what is good?" in contexts or any("?" in text for text in contexts)  # questions and their contexts
    out = folder / "tapt"
    result = _run(str(out), "--task", "paraphrase", "--registry", str(registry), "--max-length", "32")
    assert result.exit_code == 0, result.output
    card = json.loads((out / "pretraining.json").read_text())
    assert card["corpus"]["texts"] == len(pairs)
    capped = _run(str(folder / "capped"), "--task", "paraphrase", "--registry", str(registry), "--max-texts", "40")
    assert capped.exit_code == 0 and json.loads((folder / "capped" / "pretraining.json").read_text())["corpus"][
        "texts"] == 40
    refused = _run(str(folder / "none"), "--registry", str(registry))
    assert refused.exit_code != 0 and "give the corpus" in refused.output


def test_several_tasks_texts_are_one_mixed_corpus(setup):
    """`--task` repeated: the tasks' texts taken in turn (so the first N hold a share of each), distinct; tasks on
    different backbones are refused naming them."""
    import yaml

    from hub.errors import DataError
    from hub.pretraining.corpus import task_texts, tasks_texts
    from hub.registry import load_registry

    folder, registry, _ = setup
    loaded = load_registry(registry)
    pairs, sentences = task_texts(loaded, "paraphrase"), task_texts(loaded, "sentiment")
    mixed = tasks_texts(loaded, ["paraphrase", "sentiment"])
    assert set(mixed) == set(pairs) | set(sentences) and len(mixed) == len(set(mixed))
    assert mixed[0] == pairs[0] and sentences[0] in mixed[:2]  # in turn: the first of each comes first
    first_forty = set(mixed[:40])
    assert first_forty & set(pairs) and first_forty & (set(sentences) - set(pairs))
    result = _run(str(folder / "mixed"), "--task", "paraphrase", "--task", "sentiment", "--registry", str(registry),
                  "--max-texts", "30", "--max-length", "24")
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "mixed" / "pretraining.json").read_text())["corpus"]["texts"] == 30

    document = yaml.safe_load(registry.read_text())
    document["backbones"].append({**document["backbones"][0], "name": "other"})
    document["tasks"].append({**next(t for t in document["tasks"] if t["name"] == "sentiment"), "name": "elsewhere",
                              "backbone": "other"})
    two = folder / "two_backbones.yaml"
    two.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"different backbones: .*sentiment \(tiny\), elsewhere \(other\)"):
        tasks_texts(load_registry(two), ["sentiment", "elsewhere"])


def test_next_sentence_prediction_reads_documents_and_saves_its_head(setup):
    folder, registry, _ = setup
    documents = "\n\n".join("\n".join(" ".join([word] * 4) for _ in range(3)) for word in FILLER * 3)
    corpus = folder / "documents.txt"
    corpus.write_text(documents + "\n", encoding="utf-8")
    out = folder / "nsp"
    result = _run(str(out), "--text", str(corpus), "--backbone", "tiny", "--registry", str(registry),
                  "--next-sentence", "--max-length", "24")
    assert result.exit_code == 0, result.output
    card = json.loads((out / "pretraining.json").read_text())
    assert card["corpus"]["documents"] == 30 and card["corpus"]["sentence_pairs"] == 60  # two pairs per document
    assert set(card["held_out"]["next_sentence_accuracy"]) == {"before", "after"}
    assert "next-sentence accuracy" in result.output and "next-sentence accuracy" in (out / "README.md").read_text()
    heads = load_file(str(out / "pretraining_heads.safetensors"))
    assert heads and all(k.startswith("nsp.") for k in heads)
    for extra, message in [(("--task", "paraphrase"), "a task's texts have no documents"),
                           ((), "needs at least two documents")]:
        lone = folder / "lone.txt"
        lone.write_text("one sentence\nanother one\n", encoding="utf-8")
        refused = _run(str(folder / "refused_nsp"), "--text", str(lone), "--backbone", "tiny", "--registry",
                       str(registry), "--next-sentence", *extra)
        assert refused.exit_code != 0 and message in " ".join(refused.output.split()), refused.output
        assert not (folder / "refused_nsp").exists()
