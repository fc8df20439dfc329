"""The pre-training model (hub/pretraining/model.py) on the tiny backbone: only the adapter and the heads train,
the backbone stays bit-identical, and masked-token accuracy on held-out text rises with each objective."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoTokenizer, BertModel

from hub.methods.lora.training import LoraOptions
from hub.pretraining.collator import MaskingCollator, encode_texts
from hub.pretraining.masking import Masker, UnigramSampler
from hub.pretraining.model import PretrainingModel, held_out_score

from conftest import FILLER, NEGATIVE, POSITIVE


def _corpus(count: int, seed: int) -> list[str]:
    """Texts with a structure to learn: the filler words in one order from one of two starts, 12 words long."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        start = rng.choice([0, 5])
        texts.append(" ".join(FILLER[(start + i) % len(FILLER)] for i in range(12)))
    return texts


def _collator(tokenizer, objective, texts, seed):
    sampler = UnigramSampler.from_corpus((tokenizer(t)["input_ids"] for t in texts), len(tokenizer),
                                         tokenizer.all_special_ids)
    return MaskingCollator(tokenizer, Masker(objective, tokenizer.mask_token_id, sampler, seed=seed))


@pytest.mark.parametrize("objective", ["mlm", "whole_word", "span"])
def test_pretraining_trains_the_adapter_and_heads_only_and_accuracy_rises(tiny_backbone_dir, objective):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    backbone = BertModel.from_pretrained(tiny_backbone_dir)
    frozen = {name: tensor.clone() for name, tensor in backbone.state_dict().items()}
    torch.manual_seed(0)
    model = PretrainingModel(backbone, LoraOptions(r=8, dropout=0.0), span_boundary=objective == "span")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name.startswith(("mlm.", "sbo.")) for name in trainable)
    train, held_out = _corpus(200, seed=0), _corpus(40, seed=1)
    train_encoded, held_out_encoded = (encode_texts(tokenizer, texts, 32)[0] for texts in (train, held_out))
    before = held_out_score(model, _collator(tokenizer, objective, held_out, seed=5), held_out_encoded).accuracy
    collator = _collator(tokenizer, objective, train, seed=0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(150):
        batch = collator(train_encoded[(step * 16) % 200:(step * 16) % 200 + 16])
        loss = model(**batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_score(model, _collator(tokenizer, objective, held_out, seed=5), held_out_encoded).accuracy
    assert after > before + 0.2, (before, after)
    for name, tensor in model.encoder.get_base_model().state_dict().items():
        if "lora_" not in name:  # PEFT wraps the layers it adapts: base_layer holds the original weight
            assert torch.equal(tensor, frozen[name.replace(".base_layer", "")]), name


def _documents(count: int, seed: int) -> list[list[str]]:
    """Documents of four sentences, each sentence 3-5 repeats of the document's one word (22 words in turn): a
    sentence's next one has its word, a sentence of another document (almost always) another word."""
    rng = random.Random(seed)
    words = [*POSITIVE, *NEGATIVE, *FILLER]
    return [[" ".join([words[(seed + d) % len(words)]] * rng.randint(3, 5)) for _ in range(4)] for d in range(count)]


def test_next_sentence_prediction_learns_which_pairs_follow(tiny_backbone_dir):
    from hub.pretraining.collator import encode_pairs
    from hub.pretraining.sentence_pairs import next_sentence_pairs

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    torch.manual_seed(0)
    model = PretrainingModel(BertModel.from_pretrained(tiny_backbone_dir), LoraOptions(r=8, dropout=0.0),
                             next_sentence=True)
    assert any(name.startswith("nsp.") for name, p in model.named_parameters() if p.requires_grad)
    train, dropped = encode_pairs(tokenizer, next_sentence_pairs(_documents(300, 0), seed=0), 24)
    held_out, _ = encode_pairs(tokenizer, next_sentence_pairs(_documents(60, 1), seed=1), 24)
    assert dropped == 0 and {t.is_next for t in train} == {True, False}
    first = train[0]
    assert first.token_type_ids is not None and set(first.token_type_ids) == {0, 1}
    second = [w for w, segment in zip(first.words, first.token_type_ids) if segment == 1]
    assert not set(second) & {w for w, s in zip(first.words, first.token_type_ids) if s == 0}  # words never cross
    unigram = UnigramSampler.from_corpus((t.input_ids for t in train), len(tokenizer), tokenizer.all_special_ids)
    collator = MaskingCollator(tokenizer, Masker("whole_word", tokenizer.mask_token_id, unigram, seed=3))
    batch = collator(train[:8])
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    assert batch["next_sentence_label"].tolist() == [int(bool(t.is_next)) for t in train[:8]]

    def held_out_collator():
        return MaskingCollator(tokenizer, Masker("whole_word", tokenizer.mask_token_id, unigram, seed=7))

    before = held_out_score(model, held_out_collator(), held_out).next_sentence_accuracy
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(6):
        for start in range(0, len(train), 32):
            loss = model(**collator(train[start:start + 32]))["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = held_out_score(model, held_out_collator(), held_out).next_sentence_accuracy
    assert before is not None and after is not None and after > max(before, 0.5) + 0.2, (before, after)


def test_a_low_rank_prediction_head_is_small_learns_and_round_trips(tiny_backbone_dir, tmp_path):
    """`transform_rank`: the head's dense layer as two of rank r, so the head stays small beside the backbone; it
    still learns the corpus, and saves and loads as any head."""
    from heads.base import Head

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    backbone = BertModel.from_pretrained(tiny_backbone_dir)
    torch.manual_seed(0)
    full = PretrainingModel(BertModel.from_pretrained(tiny_backbone_dir), LoraOptions(r=8, dropout=0.0)).mlm
    model = PretrainingModel(backbone, LoraOptions(r=8, dropout=0.0), transform_rank=2)
    hidden, vocab = backbone.config.hidden_size, backbone.config.vocab_size
    count = lambda head: sum(p.numel() for p in head.parameters())  # noqa: E731
    assert count(model.mlm) == 2 * hidden * 2 + hidden + 2 * hidden + vocab  # A, B, B's bias, layer norm, vocab bias
    assert count(full) == hidden * hidden + hidden + 2 * hidden + vocab
    train, held_out = _corpus(200, seed=0), _corpus(40, seed=1)
    train_encoded, held_out_encoded = (encode_texts(tokenizer, texts, 32)[0] for texts in (train, held_out))
    before = held_out_score(model, _collator(tokenizer, "mlm", held_out, seed=5), held_out_encoded).accuracy
    collator = _collator(tokenizer, "mlm", train, seed=0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(150):
        loss = model(**collator(train_encoded[(step * 16) % 200:(step * 16) % 200 + 16]))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_score(model, _collator(tokenizer, "mlm", held_out, seed=5), held_out_encoded).accuracy
    assert after > before + 0.2, (before, after)
    model.mlm.save(tmp_path)
    loaded = Head.load(tmp_path)
    assert loaded.config.transform_rank == 2
    assert all(torch.equal(a, b) for a, b in zip(model.mlm.state_dict().values(), loaded.state_dict().values()))
