"""Shared fixtures: a tiny random BERT saved as a local backbone folder, tiny data sets, trained tiny tasks.

Most tests run on the tiny backbone (seconds); tests marked by `needs_embedded` use the real embedded
backbones and the shipped adapters.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

POSITIVE = ["good", "great", "fine", "nice", "happy", "love"]
NEGATIVE = ["bad", "awful", "poor", "sad", "hate", "dull"]
FILLER = ["the", "a", "movie", "book", "was", "is", "very", "this", "plot", "it"]


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BertModel with a letter-level WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    letters = list(string.ascii_lowercase + string.digits + ".,!?'@#")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER, *letters, *[f"##{c}" for c in letters]]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["negative", "positive"])
        words = rng.sample(FILLER, 3) + [rng.choice(POSITIVE if label == "positive" else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def pair_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a = " ".join(rng.sample(FILLER, 4))
        same = rng.random() < 0.5
        b = a if same else " ".join(rng.sample(FILLER, 4))
        rows.append({"first": a, "second": b, "label": "same" if same else "different", "score": 5.0 if same else rng.uniform(0, 3)})
    return rows


def tagging_rows(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Sentences of filler words with 'GOOD' entities (one or two positive words) and 'BAD' ones."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(2, 6)):
            roll = rng.random()
            if roll < 0.2:
                words = rng.sample(POSITIVE, rng.randint(1, 2))
                tokens += words
                tags += ["B-GOOD"] + ["I-GOOD"] * (len(words) - 1)
            elif roll < 0.35:
                tokens.append(rng.choice(NEGATIVE))
                tags.append("B-BAD")
            else:
                tokens.append(rng.choice(FILLER))
                tags.append("O")
        rows.append((tokens, tags))
    return rows


def write_conll(path: Path, rows: list[tuple[list[str], list[str]]]) -> Path:
    lines = ["-DOCSTART- -X- O", ""]
    for tokens, tags in rows:
        lines += [f"{token} X {tag}" for token, tag in zip(tokens, tags)] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_squad(path: Path, n: int, seed: int) -> Path:
    """SQuAD-format questions: 'what is good?' over filler contexts holding one positive word (the answer)."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 30))]
        answer = rng.choice(POSITIVE)
        words.insert(rng.randint(0, len(words)), answer)
        context = " ".join(words)
        start = len(" ".join(words[: words.index(answer)])) + (1 if words.index(answer) else 0)
        paragraphs.append({"context": context, "qas": [{"id": str(i), "question": "what is good?", "answers": [{"text": answer, "answer_start": start}]}]})
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}), encoding="utf-8")
    return path


def write_semeval(path: Path, n: int, seed: int) -> Path:
    """SemEval-2010-format sentences: a positive word 'beats' a negative one, in either direction, or Other."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        first, second = rng.choice([(POSITIVE, NEGATIVE), (NEGATIVE, POSITIVE), (FILLER, FILLER)])
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 8))]
        a, b = sorted(rng.sample(range(len(words) + 1), 2))
        words.insert(b, f"<e2>{rng.choice(second)}</e2>")
        words.insert(a, f"<e1>{rng.choice(first)}</e1>")
        label = "Beats(e1,e2)" if first is POSITIVE else "Beats(e2,e1)" if first is NEGATIVE else "Other"
        lines += [f'{i + 1}\t"{" ".join(words)}"', label, "Comment:", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_spert(path: Path, n: int, seed: int) -> Path:
    """SpERT-format sentences: positive words are GOOD entities, negative words BAD ones, filler between; each GOOD
    entity Beats every BAD one after it in the sentence (a directed relation), never one before it."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        tokens, entities = [], []
        for _ in range(rng.randint(1, 3)):
            tokens += [rng.choice(FILLER) for _ in range(rng.randint(0, 3))]
            kind = rng.choice(["GOOD", "BAD"])
            entities.append({"type": kind, "start": len(tokens), "end": len(tokens) + 1})
            tokens.append(rng.choice(POSITIVE if kind == "GOOD" else NEGATIVE))
        tokens += [rng.choice(FILLER) for _ in range(rng.randint(0, 2))]
        relations = [{"type": "Beats", "head": i, "tail": j} for i, a in enumerate(entities)
                     for j, b in enumerate(entities) if a["type"] == "GOOD" and b["type"] == "BAD" and j > i]
        sentences.append({"tokens": tokens, "entities": entities, "relations": relations})
    path.write_text(json.dumps(sentences), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_registry(folder: Path, backbone_dir: Path, tasks: list[dict] | None = None) -> dict:
    """A registry document with the tiny backbone and four tasks (single, pair, regression, tagging)."""
    data = folder / "data"
    data.mkdir(exist_ok=True)
    write_jsonl(data / "sent_train.jsonl", sentiment_rows(96, 1))
    write_jsonl(data / "sent_dev.jsonl", sentiment_rows(40, 2))
    write_jsonl(data / "pair_train.jsonl", pair_rows(96, 3))
    write_jsonl(data / "pair_dev.jsonl", pair_rows(40, 4))
    write_conll(data / "tag_train.conll", tagging_rows(96, 5))
    write_conll(data / "tag_dev.conll", tagging_rows(40, 6))
    write_squad(data / "qa_train.json", 96, 7)
    write_squad(data / "qa_dev.json", 40, 8)
    write_semeval(data / "rel_train.txt", 120, 9)
    write_semeval(data / "rel_dev.txt", 40, 10)
    write_spert(data / "joint_train.json", 160, 11)
    write_spert(data / "joint_dev.json", 40, 12)
    (data / "joint_types.json").write_text(json.dumps({  # SpERT's types file: Beats is directed
        "entities": {"GOOD": {"short": "G"}, "BAD": {"short": "B"}}, "relations": {"Beats": {"symmetric": False}}}))
    fast = {"epochs": 1, "batch_size": 16, "learning_rate": 5e-3, "lora": {"r": 4, "target_modules": ["query", "value"]}}
    default_tasks = [
        {"name": "sentiment", "backbone": "tiny", "kind": "classification", "labels": ["negative", "positive"],
         "inputs": ["text"], "metric": "accuracy", "train": {**fast, "class_weights": "balanced", "focal_gamma": 1.0},
         "data": {"format": "jsonl", "train": "data/sent_train.jsonl", "dev": "data/sent_dev.jsonl"}},
        {"name": "paraphrase", "backbone": "tiny", "kind": "classification", "labels": ["different", "same"],
         "inputs": ["first", "second"], "metric": "f1", "head": {"pooling": "cls"}, "train": {**fast, "sampling": "sqrt"},
         "data": {"format": "jsonl", "train": "data/pair_train.jsonl", "dev": "data/pair_dev.jsonl"}},
        {"name": "similarity", "backbone": "tiny", "kind": "regression", "inputs": ["first", "second"],
         "metric": "pearson_spearman", "head": {"pooling": "max", "pair": "siamese"}, "train": fast,
         "data": {"format": "jsonl", "columns": {"label": "score"}, "train": "data/pair_train.jsonl", "dev": "data/pair_dev.jsonl"}},
        {"name": "entities", "backbone": "tiny", "kind": "tagging", "labels": ["GOOD", "BAD"], "metric": "entity_f1",
         "example": "the movie was good",
         "head": {"scheme": "bio", "crf": True, "layers": "mix"}, "train": {**fast, "epochs": 3},
         "data": {"format": "conll", "train": "data/tag_train.conll", "dev": "data/tag_dev.conll", "hub_id": "tests/tiny-conll"}},
        {"name": "reader", "backbone": "tiny", "kind": "qa", "inputs": ["question", "context"], "metric": "squad",
         "example": {"question": "what is good?", "context": "the movie was great"},
         "head": {"doc_stride": 6, "max_answer_tokens": 8}, "train": {**fast, "epochs": 4},
         "data": {"format": "squad", "train": "data/qa_train.json", "dev": "data/qa_dev.json"}},
        {"name": "spans", "backbone": "tiny", "kind": "span_ner", "labels": ["GOOD", "BAD"], "metric": "span_f1",
         "head": {"max_span_width": 3, "negative_samples": 10}, "train": {**fast, "epochs": 3},
         "data": {"format": "conll", "train": "data/tag_train.conll", "dev": "data/tag_dev.conll"}},
        {"name": "relations", "backbone": "tiny", "kind": "relation", "labels": ["Beats(e1,e2)", "Beats(e2,e1)", "Other"],
         "metric": "semeval_macro_f1", "train": {**fast, "epochs": 4},
         "example": {"text": "good beats dull", "head": [0, 4], "tail": [11, 15]},  # spans, as hub.run takes them
         "data": {"format": "semeval", "train": "data/rel_train.txt", "dev": "data/rel_dev.txt"}},
        {"name": "joint", "backbone": "tiny", "kind": "entity_relation", "labels": ["GOOD", "BAD"],
         "example": "the good movie was sad", "train": {**fast, "epochs": 20, "learning_rate": 1e-2},
         "head": {"relations": ["Beats"], "max_span_width": 3, "negative_entities": 20, "negative_relations": 20},
         "data": {"format": "spert", "train": "data/joint_train.json", "dev": "data/joint_dev.json",
                  "types": "data/joint_types.json"}},
    ]
    return {
        "backbones": [{"name": "tiny", "source": str(backbone_dir), "id": "tests/tiny-bert", "language": "en", "max_length": 24}],
        "tasks": default_tasks if tasks is None else tasks,
    }


def write_registry(folder: Path, document: dict) -> Path:
    path = folder / "registry.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory, tiny_backbone_dir) -> Path:
    """A registry whose tiny tasks have been trained with the project's trainer (once per session)."""
    from hub.registry import load_registry
    from hub.training import train_task

    folder = tmp_path_factory.mktemp("trained")
    path = write_registry(folder, tiny_registry(folder, tiny_backbone_dir))
    registry = load_registry(path)
    for task in ("sentiment", "paraphrase", "similarity", "entities", "reader", "spans", "relations", "joint"):
        train_task(registry, task, progress=False)
    add_fill_mask_task(path, registry)
    return path


def add_fill_mask_task(path: Path, registry) -> None:
    """Pre-train a domain adapter (`hub pretrain`'s API) on FILLER read cyclically from one of two places, and add it
    to the registry at `path` as the fill_mask task "fill" (its dev set: cloze rows)."""
    from hub.pretraining.train import PretrainRecipe, pretrain

    rng = random.Random(0)
    texts = [" ".join(FILLER[(start + i) % len(FILLER)] for i in range(12)) for start in
             (rng.choice([0, 5]) for _ in range(240))]
    recipe = PretrainRecipe(epochs=16, learning_rate=1e-2, head_learning_rate=2e-2, max_length=32)
    pretrain(registry, "tiny", texts, path.parent / "adapters" / "fill", recipe, progress=False)
    cloze = [{"text": " ".join(FILLER[:i] + ["[MASK]"] + FILLER[i + 1:]), "label": FILLER[i]} for i in range(10)]
    write_jsonl(path.parent / "data" / "fill_dev.jsonl", cloze)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["tasks"].append({"name": "fill", "backbone": "tiny", "kind": "fill_mask", "max_length": 24,
                              "head": {"top_k": 3}, "example": "the a movie [MASK] was",
                              "data": {"format": "jsonl", "train": "data/fill_dev.jsonl", "dev": "data/fill_dev.jsonl"}})
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")


@pytest.fixture
def tiny_hub(trained_registry):
    import hub

    return hub.Hub.load(trained_registry)


needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real GLUE/CLUE files not found at {SHARED_DATA}")


def random_request(rng: random.Random):
    """A (task, input) for one of the tiny trained tasks, of random kind, shape and length."""
    words = lambda n: " ".join(rng.choice(FILLER + POSITIVE + NEGATIVE) for _ in range(n))  # noqa: E731
    task = rng.choice(["sentiment", "paraphrase", "similarity", "entities", "reader", "spans", "relations", "joint"])
    if task == "sentiment":
        return task, words(rng.randint(1, 12))
    if task == "joint":
        return task, words(rng.randint(1, 20)) if rng.random() < 0.5 else tuple(words(rng.randint(1, 9)).split())
    if task == "relations":
        text = words(rng.randint(3, 12))
        return task, {"text": text, "head": [0, text.index(" ")], "tail": [text.rindex(" ") + 1, len(text)]}
    if task == "reader":
        return task, {"question": "what is good?", "context": words(rng.randint(1, 40))}
    if task in ("entities", "spans"):
        return task, words(rng.randint(1, 30)) if rng.random() < 0.5 else tuple(words(rng.randint(1, 9)).split())
    return task, (words(rng.randint(1, 8)), words(rng.randint(1, 8)))


def assert_same_result(a: dict, b: dict) -> None:
    """Two answers for one input agree (labels, spans and tags exactly; scores within float tolerance)."""
    assert a.keys() == b.keys() and a["task"] == b["task"]
    if "label" in a:
        assert a["label"] == b["label"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    elif "answer" in a:
        assert (a["answer"], a["start"], a["end"], a["windows"]) == (b["answer"], b["start"], b["end"], b["windows"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    elif "tags" in a:
        assert a["tags"] == b["tags"] and a["tokens"] == b["tokens"] and len(a["entities"]) == len(b["entities"])
        assert [(e["start"], e["end"], e["label"]) for e in a["entities"]] == [(e["start"], e["end"], e["label"]) for e in b["entities"]]
        assert [e["score"] for e in a["entities"]] == pytest.approx([e["score"] for e in b["entities"]], abs=1e-4)
    elif "relations" in a:
        assert [(e["start"], e["end"], e["label"]) for e in a["entities"]] == [(e["start"], e["end"], e["label"]) for e in b["entities"]]
        assert [(r["head"], r["tail"], r["label"]) for r in a["relations"]] == [(r["head"], r["tail"], r["label"]) for r in b["relations"]]
        assert [x["score"] for x in a["entities"] + a["relations"]] == pytest.approx([x["score"] for x in b["entities"] + b["relations"]], abs=1e-4)
    elif "masks" in a:
        assert a["sequence"] == b["sequence"] and len(a["masks"]) == len(b["masks"])
        for x, y in zip(a["masks"], b["masks"]):
            assert (x["start"], x["end"]) == (y["start"], y["end"])
            assert [c["token"] for c in x["candidates"]] == [c["token"] for c in y["candidates"]]
            assert [c["score"] for c in x["candidates"]] == pytest.approx([c["score"] for c in y["candidates"]], abs=1e-4)
    else:
        assert a["value"] == pytest.approx(b["value"], abs=1e-4)


METHOD_TASKS = ("sentiment", "paraphrase", "similarity", "entities", "reader", "spans", "relations", "joint")


@pytest.fixture(scope="session")
def methods_registry(tmp_path_factory, tiny_backbone_dir):
    """The tiny tasks, each trained with one method, in turn over every registered method (each used at least once)."""
    from hub.methods import METHODS
    from hub.registry import load_registry
    from hub.training import train_task

    folder = tmp_path_factory.mktemp("methods")
    document = tiny_registry(folder, tiny_backbone_dir)
    names = sorted(METHODS)
    assert len(names) <= len(METHOD_TASKS)
    for i, task in enumerate(document["tasks"]):
        task["train"] = {k: v for k, v in task["train"].items() if k != "lora"}
        task["train"]["adapter"] = {"method": names[i % len(names)]}
    path = write_registry(folder, document)
    registry = load_registry(path)
    for task in METHOD_TASKS:
        train_task(registry, task, progress=False)
    return path
