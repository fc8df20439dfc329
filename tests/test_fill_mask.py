"""Fill-mask served through the router (heads/fill_mask): a domain adapter `hub pretrain` wrote, registered as a
fill_mask task, answers each [MASK] with its top candidates, alone or in mixed batches with every other kind; bad
requests are refused with the fix."""

from __future__ import annotations

import random

import pytest
import yaml
from conftest import FILLER, assert_same_result, random_request, write_registry

import hub
from hub.registry import load_registry


@pytest.fixture(scope="module")
def fill_hub(trained_registry):
    """The trained tiny registry, whose "fill" task conftest.add_fill_mask_task pre-trained with `hub pretrain`'s API."""
    return hub.Hub.load(trained_registry)


def test_each_mask_gets_its_learned_token_first_with_probabilities(fill_hub):
    result = fill_hub.run("fill", "the a movie [MASK] was is very [MASK] plot")
    assert [mask["candidates"][0]["token"] for mask in result["masks"]] == ["book", "this"]
    text = "the a movie [MASK] was is very [MASK] plot"
    assert [(m["start"], m["end"]) for m in result["masks"]] == [(12, 18), (31, 37)]
    assert all(text[m["start"]:m["end"]] == "[MASK]" for m in result["masks"])
    assert result["sequence"] == "the a movie book was is very this plot"
    for mask in result["masks"]:
        scores = [c["score"] for c in mask["candidates"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    more = fill_hub.run("fill", {"text": "the a movie [MASK] was", "top_k": 7})
    assert len(more["masks"]) == 1 and len(more["masks"][0]["candidates"]) == 7
    assert more["masks"][0]["candidates"][0]["token_id"] == result["masks"][0]["candidates"][0]["token_id"]


def test_special_tokens_are_never_candidates(fill_hub):
    """[UNK], [PAD], [CLS], [SEP] and [MASK] say nothing as a fill: the probabilities are over the other tokens."""
    tokenizer = fill_hub.runtime("fill").backbone.tokenizer
    result = fill_hub.run("fill", {"text": "[MASK] [MASK] the a", "top_k": 100})
    answerable = len(tokenizer) - len(tokenizer.all_special_ids)
    for mask in result["masks"]:
        candidates = mask["candidates"]
        assert len(candidates) == min(100, answerable)
        assert not {c["token_id"] for c in candidates} & set(tokenizer.all_special_ids)
        assert all(c["score"] > 0 for c in candidates)
        if answerable <= 100:
            assert sum(c["score"] for c in candidates) == pytest.approx(1, abs=1e-4)


def test_fill_mask_in_mixed_batches_answers_as_alone(fill_hub):
    rng = random.Random(3)
    requests = [random_request(rng) for _ in range(20)]
    fills = [("fill", "the a movie [MASK] was is"), ("fill", {"text": "[MASK] [MASK] plot it", "top_k": 2}),
             ("fill", "very this [MASK]")]
    mixed = requests[:7] + fills[:1] + requests[7:14] + fills[1:] + requests[14:]
    for request, answer in zip(mixed, fill_hub.run_many(mixed)):
        assert_same_result(answer, fill_hub.run(*request))


def test_a_text_longer_than_the_window_keeps_the_tokens_around_its_mask(fill_hub):
    words = (FILLER * 6)[:50]
    words[33] = "[MASK]"
    result = fill_hub.run("fill", " ".join(words))
    assert result["truncated"] is True
    start = result["masks"][0]["start"]
    assert " ".join(words)[start:start + 6] == "[MASK]"
    # 22 tokens fit beside [CLS] and [SEP]: the mask's 10 before it and 11 after it (one word, one token each)
    window = fill_hub.run("fill", " ".join(words[23:45]))
    assert "truncated" not in window
    assert result["masks"][0]["candidates"] == window["masks"][0]["candidates"]


@pytest.mark.parametrize("request_, message", [
    ("no mask here", r"has no \[MASK\] token. Put \[MASK\]"),
    ("the movie <mask> was", r"'<mask>', another tokenizer's spelling"),
    ("the movie [mask] was", r"'\[mask\]', another tokenizer's spelling"),
    ("[MASK] " + "the " * 30 + "[MASK]", r"spread over 32 tokens, more than the 22 one window holds"),
    ({"text": "the [MASK]", "top_k": 0}, r"top_k=0"),
    ({"text": "the [MASK]", "top_k": True}, r"top_k=True"),
    ({"text": "the [MASK]", "k": 2}, r"got keys \['k', 'text'\]"),
    ({"text": "   "}, r"empty text"),
    (["the [MASK]"], r"got list"),
])
def test_bad_fill_mask_requests_are_refused_with_the_fix(fill_hub, request_, message):
    with pytest.raises(hub.InputError, match=message):
        fill_hub.run("fill", [request_] if isinstance(request_, list) else request_) if not isinstance(
            request_, list) else fill_hub.run_many([("fill", request_)])


def test_a_fill_mask_entry_is_checked_like_any_other(trained_registry, tmp_path):
    document = yaml.safe_load(trained_registry.read_text())
    document["tasks"] = [{"name": "fill", "backbone": "tiny", "kind": "fill_mask", "labels": ["a", "b"]}]
    with pytest.raises(hub.RegistryError, match="predicts a value, not labels"):
        load_registry(write_registry(tmp_path, document))
    document["tasks"] = [{"name": "fill", "backbone": "tiny", "kind": "fill_mask", "head": {"layers": "last4"}}]
    with pytest.raises(hub.RegistryError, match="scores the last layer"):
        load_registry(write_registry(tmp_path, document))


def test_hub_quantize_stores_a_pretrained_folder_small_and_records_it_in_its_own_card(trained_registry, tmp_path):
    """`hub quantize` on a fill_mask task (`hub pretrain`'s folder, whose card has no task recipe): int4 adapter at a
    lower rank and a float16 head, scored on the dev cloze rows as stored, recorded in pretraining.json and the card."""
    import json
    import shutil

    from typer.testing import CliRunner

    from hub.cli import app

    document = yaml.safe_load(trained_registry.read_text())
    source = trained_registry.parent / "adapters" / "fill"
    shutil.copytree(source, tmp_path / "adapters" / "fill")
    shutil.copytree(trained_registry.parent / "data", tmp_path / "data")
    document["tasks"] = [t for t in document["tasks"] if t["name"] == "fill"]
    registry = write_registry(tmp_path, document)
    before = sum(f.stat().st_size for f in source.rglob("*") if f.is_file())
    result = CliRunner().invoke(app, ["quantize", "fill", "--dtype", "int4", "--rank", "4", "--head", "float16",
                                      "-r", str(registry)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    folder = tmp_path / "adapters" / "fill"
    stored = json.loads((folder / "pretraining.json").read_text())
    assert stored["storage"] == {"adapter": "int4", "head": "float16", "rank": 4}
    assert stored["bytes"] == report["bytes_after"] == sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert report["bytes_after"] < before / 2
    assert stored["served_metrics"] == report["metrics"] and report["metrics"]["accuracy"] >= 0.8  # still learned
    card = (folder / "README.md").read_text()
    assert "adapter weights as int4 at rank 4" in card and f"{stored['bytes']:,} bytes" in card
    assert stored["command"].endswith("hub quantize fill --dtype int4 --head float16 --rank 4")  # after any recorded
    from hub.card import card_metrics

    assert card_metrics(folder) == {"masked_token_accuracy": stored["held_out"]["accuracy"]["after"],
                                    **report["metrics"]}
    served = hub.Hub.load(registry).run("fill", "the a movie [MASK] was")
    assert served["masks"][0]["candidates"][0]["token"] == "book"


def test_runs_of_adjacent_masks_are_found():
    from heads.fill_mask.words import mask_runs

    assert mask_runs([3, 4, 9, 11, 12, 13, 20, 21, 22, 23, 24]) == [[0, 1], [3, 4, 5]]  # 5 in a row: too long to try


def test_chinese_runs_of_masks_get_dictionary_words_scored_by_their_characters():
    from transformers import AutoTokenizer

    from heads.fill_mask.codec import FillMaskCodec
    from heads.fill_mask.head import FillMaskConfig, FillMaskHead
    from hub.backbone import resolve_source
    from hub.registry import TaskSpec

    registry = load_registry(hub.default_registry_path(), strict_adapters=False)
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(registry.backbone("zh"), registry))
    head = FillMaskHead(FillMaskConfig(kind="fill_mask", hidden_size=8, vocab_size=len(tokenizer)))
    spec = TaskSpec(name="fill_zh", backbone="zh", kind="fill_mask")
    codec = FillMaskCodec(spec, head, tokenizer, 64, "zh")
    request = codec.normalize({"text": "[MASK][MASK]是中国的首都，[MASK]天很好。", "top_k": 3})
    ids = lambda text: tokenizer.convert_tokens_to_ids(list(text))  # noqa: E731
    decoded = [{"masks": [list(zip(ids("北南京"), [0.5, 0.3, 0.1])), list(zip(ids("京方北"), [0.6, 0.2, 0.1])),
                          list(zip(ids("今明"), [0.7, 0.2]))]}]
    result = codec.finish(request, codec.encode([request])[0], decoded)
    assert result["sequence"] == "北京是中国的首都，今天很好。"
    (run,) = result["words"]  # the lone third mask is no run
    assert (run["start"], run["end"]) == (0, 12)
    assert [w["word"] for w in run["words"]] == ["北京", "南京", "北方"]  # 0.30, 0.18, 0.10; 南方 (0.06) is fourth
    assert run["words"][0]["score"] == pytest.approx(0.3)
    lone = codec.normalize("今[MASK]天")
    assert "words" not in codec.finish(lone, codec.encode([lone])[0], [{"masks": decoded[0]["masks"][2:]}])
