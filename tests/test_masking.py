"""The pre-training masking schemes (hub/pretraining/masking.py), tested on what they produce over many draws with
the embedded English and Chinese tokenizers: the selection rate, the 80/10/10 split, unigram replacements, whole
words (WordPiece continuations; jieba's Chinese words) never partly masked, SpanBERT's span lengths."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from hub.backbone import resolve_source
from hub.pretraining.masking import (
    IGNORED,
    Masker,
    MaskingOptions,
    UnigramSampler,
    is_chinese,
    jieba_spans,
    segmented_words,
    span_lengths,
    wordpiece_words,
)
from hub.registry import load_registry

REPO = Path(__file__).resolve().parent.parent
ENGLISH = [
    "The unbelievably talented photographers documented extraordinary biodiversity along riverbanks.",
    "Tokenization splits uncommon words into several wordpieces, while frequent words stay whole.",
    "A bank of the river flooded; the bank downtown lent money to the fishermen anyway.",
    "Researchers characterized the antidisestablishmentarianism debate as overwhelmingly theoretical.",
]
CHINESE = [
    "今天天气很好，我们去公园散步，顺便看看湖边新开的咖啡馆。",
    "苹果公司发布了新款手机，而我刚从超市买了一袋新鲜的苹果。",
    "中华人民共和国的首都是北京，这座城市有着悠久的历史和文化。",
    "自然语言处理研究如何让计算机理解和生成人类的语言。",
]


@pytest.fixture(scope="module")
def tokenizers():
    registry = load_registry(REPO / "registry.yaml")
    return {name: AutoTokenizer.from_pretrained(resolve_source(registry.backbone(name), registry)) for name in ("en", "zh")}


def _encoded(tokenizer, texts):
    """Per text: its ids, which positions may be masked, and each position's word (None for specials)."""
    rows = []
    for text in texts:
        encoding = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        ids, special = encoding["input_ids"], encoding["special_tokens_mask"]
        maskable = [not s for s in special]
        if is_chinese(text):
            words = segmented_words(encoding["offset_mapping"], jieba_spans(text))
        else:
            words = wordpiece_words(tokenizer.convert_ids_to_tokens(ids))
        rows.append((ids, maskable, words))
    return rows


def _sampler(tokenizer, rows):
    return UnigramSampler.from_corpus((ids for ids, _, _ in rows), len(tokenizer), tokenizer.all_special_ids)


def _draws(objective, tokenizer, texts, count, seed=0, options=None):
    rows = _encoded(tokenizer, texts)
    masker = Masker(objective, tokenizer.mask_token_id, _sampler(tokenizer, rows), options, seed=seed)
    return [(row, masker(*row)) for _ in range(count) for row in rows]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_token_masking_selects_the_rate_and_splits_80_10_10(tokenizers, language):
    tokenizer = tokenizers[language]
    draws = _draws("mlm", tokenizer, ENGLISH if language == "en" else CHINESE, 600)
    selected = masked = kept = 0
    for (ids, maskable, _), out in draws:
        chosen = [i for i, label in enumerate(out.labels) if label != IGNORED]
        assert len(chosen) == max(1, round(0.15 * sum(maskable)))  # BERT's count: 15% of the text's tokens
        assert all(maskable[i] for i in chosen) and all(out.labels[i] == ids[i] for i in chosen)
        assert all(out.input_ids[i] == ids[i] for i in range(len(ids)) if i not in chosen)
        selected += len(chosen)
        masked += sum(out.input_ids[i] == tokenizer.mask_token_id for i in chosen)
        kept += sum(out.input_ids[i] == ids[i] for i in chosen)
    assert selected > 5000
    # kept includes the random draws that hit the original token (rare: the corpus has dozens of distinct tokens)
    assert abs(masked / selected - 0.8) < 0.02 and abs(kept / selected - 0.1) < 0.02
    assert abs((selected - masked - kept) / selected - 0.1) < 0.02


def test_random_replacements_follow_the_corpus_unigram_frequencies(tokenizers):
    tokenizer = tokenizers["en"]
    skewed = ["the the the the the the cat sat", "the the the dog ran the the"]  # "the" dominates the corpus
    rows = _encoded(tokenizer, skewed)
    sampler = _sampler(tokenizer, rows)
    rng = np.random.default_rng(0)
    drawn = Counter(sampler.sample(200_000, rng).tolist())
    corpus = Counter(i for ids, maskable, _ in rows for i, ok in zip(ids, maskable) if ok)
    total = sum(corpus.values())
    assert set(drawn) == set(corpus)  # only the corpus's tokens, never a special token
    for token, count in corpus.items():
        assert abs(drawn[token] / 200_000 - count / total) < 0.01
    options = MaskingOptions(mask_share=0.0, random_share=1.0)  # every chosen token replaced at random
    masker = Masker("mlm", tokenizer.mask_token_id, sampler, options, seed=1)
    outs = [masker(ids, maskable) for _ in range(2000) for ids, maskable, _ in rows]
    replaced = Counter(new for out in outs for new, label in zip(out.input_ids, out.labels) if label != IGNORED)
    the = tokenizer.convert_tokens_to_ids("the")
    assert replaced.most_common(1)[0][0] == the and replaced[the] / sum(replaced.values()) > 0.55


@pytest.mark.parametrize("language", ["en", "zh"])
def test_whole_word_masking_never_masks_part_of_a_word(tokenizers, language):
    tokenizer = tokenizers[language]
    draws = _draws("whole_word", tokenizer, ENGLISH if language == "en" else CHINESE, 300)
    long_words_masked = 0
    for (ids, maskable, words), out in draws:
        by_word: dict[int, list[bool]] = {}
        for i, ok in enumerate(maskable):
            if ok:
                by_word.setdefault(words[i], []).append(out.labels[i] != IGNORED)
        for flags in by_word.values():
            assert all(flags) or not any(flags), "a word partly masked"
            long_words_masked += len(flags) > 1 and all(flags)
        covered = sum(label != IGNORED for label in out.labels)
        assert 1 <= covered <= max(1, round(0.15 * sum(maskable)))
    assert long_words_masked > 30  # words of several pieces / characters were masked, whole


def test_words_come_from_wordpiece_continuations_and_from_jieba(tokenizers):
    assert wordpiece_words(["[CLS]", "token", "##ization", "splits", "##s", "[SEP]"]) == [0, 1, 1, 2, 2, 3]
    text = "自然语言处理很有趣"
    encoding = tokenizers["zh"](text, return_offsets_mapping=True, add_special_tokens=False)
    words = segmented_words(encoding["offset_mapping"], jieba_spans(text))
    assert len(words) == len(text) and len(set(words)) < len(text)  # characters grouped into jieba's words
    assert is_chinese(text) and not is_chinese("plain English text") and not is_chinese("")


def test_span_lengths_follow_a_geometric_distribution_clipped_at_ten():
    lengths = span_lengths(200_000, 0.2, 10, np.random.default_rng(0))
    assert lengths.min() == 1 and lengths.max() == 10
    expected = [0.2 * 0.8 ** (k - 1) for k in range(1, 10)] + [0.8 ** 9]  # P(10) takes the clipped tail
    observed = np.bincount(lengths, minlength=11)[1:] / len(lengths)
    assert np.abs(observed - expected).max() < 0.005
    assert abs(lengths.mean() - sum(k * p for k, p in zip(range(1, 11), expected))) < 0.03  # SpanBERT's 3.8


@pytest.mark.parametrize("language", ["en", "zh"])
def test_span_masking_masks_runs_of_whole_words_up_to_the_rate(tokenizers, language):
    tokenizer = tokenizers[language]
    texts = [" ".join(ENGLISH)] if language == "en" else ["".join(CHINESE)]  # long enough for several spans
    draws = _draws("span", tokenizer, texts, 400)
    coverage = []
    for (ids, maskable, words), out in draws:
        budget = round(0.15 * sum(maskable))
        covered = sum(label != IGNORED for label in out.labels)
        assert covered <= budget
        coverage.append(covered / budget)
        for unit in out.units:
            assert unit == list(range(unit[0], unit[-1] + 1))  # contiguous
            first, last = words[unit[0]], words[unit[-1]]
            assert unit[0] == 0 or words[unit[0] - 1] != first
            assert unit[-1] + 1 == len(words) or words[unit[-1] + 1] != last  # whole words at both ends
    assert np.mean(coverage) > 0.85  # spans fill most of the 15% (the last span that fits may fall short)


def test_masking_is_reproducible_from_its_seed(tokenizers):
    first = [out.input_ids for _, out in _draws("span", tokenizers["en"], ENGLISH, 3, seed=7)]
    again = [out.input_ids for _, out in _draws("span", tokenizers["en"], ENGLISH, 3, seed=7)]
    other = [out.input_ids for _, out in _draws("span", tokenizers["en"], ENGLISH, 3, seed=8)]
    assert first == again and first != other


def test_bad_input_is_refused_with_the_fix(tokenizers):
    tokenizer = tokenizers["en"]
    rows = _encoded(tokenizer, ENGLISH[:1])
    sampler = _sampler(tokenizer, rows)
    with pytest.raises(ValueError, match="no maskable token"):
        Masker("mlm", tokenizer.mask_token_id, sampler)([101, 102], [False, False])
    with pytest.raises(ValueError, match="needs each token's word"):
        Masker("whole_word", tokenizer.mask_token_id, sampler)(rows[0][0], rows[0][1])
    with pytest.raises(ValueError, match="unknown masking objective 'bert'"):
        Masker("bert", tokenizer.mask_token_id, sampler)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 0 and 1"):
        MaskingOptions(rate=1.5)
    with pytest.raises(ValueError, match="at most 1"):
        MaskingOptions(mask_share=0.9, random_share=0.2)
    with pytest.raises(ValueError, match="no maskable token to draw"):
        UnigramSampler.from_corpus([[101, 102]], len(tokenizer), tokenizer.all_special_ids)


def test_one_cjk_test_for_chinese_texts_and_the_qa_metrics_characters():
    from hub.cjk import is_cjk
    from hub.metrics import answer_tokens

    assert all(map(is_cjk, "中文\u3400\uf900\U00020000\U0002a6d6")) and not any(map(is_cjk, "a1，。ー\U0001f600"))
    assert is_chinese("\U00020000\U00020001 ok") and not is_chinese("mostly latin 中")
    assert answer_tokens("\U00020000\U00020001的 Bank") == ["\U00020000", "\U00020001", "的", "bank"]
