"""The serving benchmarks' building blocks: their variants compute the same answers, and the load
test's comparison is strict where it must be."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from load_test import same_answer  # noqa: E402


def test_hub_peft_and_merged_full_models_give_the_same_answers(tmp_path):
    """The benchmark compares speed only if B (the hub), C (PEFT set_adapter) and D (LoRA merged into
    full copies) answer alike: generated adapter folders served three ways."""
    import serving
    from serving_setup import english_backbone, mixed_requests, write_registry

    import hub

    backbone, entry = english_backbone()
    registry = write_registry(tmp_path, entry, 3, "all", backbone=backbone)
    texts = ["A gripping, funny film.", "The plot never goes anywhere.", "Stocks fell sharply on Monday.", "ok", "It rained."]
    served = hub.Hub.load(registry)
    folders = serving.adapter_folders(registry, 3)
    location, device = backbone.location, backbone.device
    variants = serving.Variants(texts, {"3": served}, {3: serving.peft_model(folders, location, device)},
                                {3: serving.full_models(folders, location, device)})
    assert {task for task, _ in mixed_requests(texts, 3)} == {"t0000", "t0001", "t0002"}
    hub_answers = variants.hub_mixed("3", 3)
    for other in (variants.naive(3), variants.full_models(3)):
        agreement = serving.agreement(hub_answers, other)
        assert agreement["same_label"] == 1.0 and agreement["max_score_diff"] < 1e-4
    plain = [served.run("t0000", text) for text in texts]  # the adapters really differ from each other
    assert [served.run("t0001", text)["score"] for text in texts] != pytest.approx([r["score"] for r in plain], abs=1e-3)


def test_load_test_compares_exactly_except_float_noise():
    answer = {"task": "conll2003", "tags": ["B-PER", "O"], "entities": [{"label": "PER", "start": 0, "end": 4, "score": 0.91}]}
    noisy = {"task": "conll2003", "tags": ["B-PER", "O"], "entities": [{"label": "PER", "start": 0, "end": 4, "score": 0.91003}]}
    assert same_answer(answer, noisy)
    assert not same_answer(answer, {**noisy, "tags": ["B-ORG", "O"]})
    assert not same_answer(answer, {**answer, "entities": []})
    assert not same_answer({"score": 0.9}, {"score": 0.91})
    assert not same_answer({"value": 1.0}, {"value": "1.0"})
