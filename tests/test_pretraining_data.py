"""Pre-training data: corpus files read and refused as users write them (hub/pretraining/corpus.py), and texts made
into masked batches with the span boundary objective's targets (hub/pretraining/collator.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from hub.backbone import resolve_source
from hub.errors import DataError
from hub.pretraining.collator import MaskingCollator, encode_text, encode_texts
from hub.pretraining.corpus import read_texts
from hub.pretraining.masking import IGNORED, Masker, UnigramSampler
from hub.registry import load_registry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tokenizers():
    registry = load_registry(REPO / "registry.yaml")
    return {name: AutoTokenizer.from_pretrained(resolve_source(registry.backbone(name), registry)) for name in ("en", "zh")}


def test_a_corpus_is_plain_lines_or_json_lines_with_a_text_field(tmp_path):
    plain = tmp_path / "corpus.txt"
    plain.write_text("first text\n\n  second text  \n", encoding="utf-8")
    assert read_texts(plain) == ["first text", "second text"]
    lines = tmp_path / "corpus.jsonl"
    lines.write_text("\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(["一段中文", "another"])),
                     encoding="utf-8")
    assert read_texts(lines, field="body") == ["一段中文", "another"]
    for name, content in (("bom.jsonl", '{"text": "first"}\n{"text": "second"}\n'), ("bom.txt", "first\nsecond\n")):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + content.encode())  # a UTF-8 byte-order mark, as Notepad writes
        assert read_texts(tmp_path / name) == ["first", "second"]


@pytest.mark.parametrize("content, name, message", [
    (None, "missing.txt", "not found"),
    (b"\xff\xfe\x00binary", "corpus.txt", "not UTF-8 text"),
    (b"", "corpus.txt", "0 non-blank text"),
    ("just one line\n".encode(), "corpus.txt", "1 non-blank text.*at least 2"),
    (b'{"text": "fine"}\nnot json\n', "corpus.jsonl", "line 2: not JSON"),
    (b'{"text": "fine"}\n{"body": "x"}\n', "corpus.jsonl", "line 2: no text field 'text' \\(found: 'body'\\)"),
    (b'{"text": "fine"}\n[1, 2]\n', "corpus.jsonl", "line 2: no text field"),
])
def test_corpora_that_cannot_be_read_are_refused_with_the_fix(tmp_path, content, name, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_texts(path)


def _collator(tokenizer, objective, texts):
    encoded = [tokenizer(text)["input_ids"] for text in texts]
    sampler = UnigramSampler.from_corpus(encoded, len(tokenizer), tokenizer.all_special_ids)
    return MaskingCollator(tokenizer, Masker(objective, tokenizer.mask_token_id, sampler, seed=0))


@pytest.mark.parametrize("language, texts", [
    ("en", ["Span masking hides runs of consecutive whole words from the encoder during pre-training today.",
            "Short one.", "A third text, long enough to hold a span or two of words for the boundary objective."]),
    ("zh", ["自然语言处理研究如何让计算机理解和生成人类的语言，这是人工智能的重要方向。", "短句。"]),
])
def test_span_batches_carry_the_boundary_targets(tokenizers, language, texts):
    tokenizer = tokenizers[language]
    collator = _collator(tokenizer, "span", texts)
    encoded, _ = encode_texts(tokenizer, texts, 48)
    for _ in range(20):
        batch = collator(encoded)
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
        assert ids.shape == labels.shape == mask.shape and ids.shape[1] <= 48
        assert (labels[mask == 0] == IGNORED).all()  # padding is never a target
        targets = labels != IGNORED
        assert targets.sum() == len(batch["span_labels"]) > 0  # every target token has its boundary target
        for row, left, right, offset, label in zip(*(batch[k].tolist() for k in (
                "span_rows", "span_left", "span_right", "span_offsets", "span_labels"))):
            position = left + 1 + offset
            assert left < position < right and labels[row, position] == label
            assert (labels[row, left + 1:right] != IGNORED).all()  # the span between its boundaries is masked
            # (a boundary may be a token of an adjacent span, as in SpanBERT: spans only never overlap)
            assert mask[row, right] == 1  # a real token ([SEP] at the latest)


def test_texts_with_nothing_to_mask_are_counted_and_dropped(tokenizers):
    collator = _collator(tokenizers["en"], "mlm", ["some text"])
    kept, dropped = encode_texts(tokenizers["en"], ["a real text", "", "   ", "\u200b\u200b", "another one"], 48)
    assert kept == [encode_text(tokenizers["en"], text, 48) for text in ["a real text", "another one"]] and dropped == 3
    batch = collator(kept)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}  # no boundary targets without spans
