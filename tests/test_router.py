"""The router: mixed-task batches through one backbone pass equal one-at-a-time answers."""

from __future__ import annotations

import random

import pytest

import hub.router as router
from conftest import assert_same_result, random_request


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_mixes_equal_one_at_a_time(tiny_hub, seed):
    rng = random.Random(seed)
    requests = [random_request(rng) for _ in range(rng.randint(5, 40))]
    mixed = tiny_hub.run_many(requests)
    alone = [tiny_hub.run(task, value) for task, value in requests]
    assert len(mixed) == len(requests)
    for a, b in zip(mixed, alone):
        assert_same_result(a, b)


def test_one_backbone_pass_for_a_mixed_batch(tiny_hub, monkeypatch):
    calls = []
    original = router._forward
    monkeypatch.setattr(router, "_forward", lambda rows: calls.append({r.task.spec.name for r in rows}) or original(rows))
    tiny_hub.run_many([("sentiment", "good movie"), ("paraphrase", ("a book", "the book")), ("similarity", ("it is", "it was"))])
    assert calls == [{"sentiment", "paraphrase", "similarity"}]


def test_rows_get_their_own_adapter(tiny_hub):
    """The three tasks' adapters differ, so the same text through two tasks' adapters must differ too."""
    runtimes = [tiny_hub.runtime(name) for name in ("paraphrase", "similarity")]
    assert runtimes[0].adapter is not runtimes[1].adapter and runtimes[0].adapter.name != runtimes[1].adapter.name
    assert runtimes[0].backbone is runtimes[1].backbone  # one shared backbone


def test_list_input_is_batched_and_ordered(tiny_hub):
    texts = ["good plot", "awful book", "the movie was fine", "sad"]
    batched = tiny_hub.run("sentiment", texts)
    assert [r["task"] for r in batched] == ["sentiment"] * 4
    for text, result in zip(texts, batched):
        assert_same_result(result, tiny_hub.run("sentiment", text))


def test_long_input_is_truncated_and_says_so(tiny_hub):
    long_text = " ".join(["movie"] * 200)
    result = tiny_hub.run("sentiment", long_text)
    assert result["truncated"] is True
    assert "truncated" not in tiny_hub.run("sentiment", "good movie")
    pair = tiny_hub.run("paraphrase", (long_text, "the book"))
    assert pair["truncated"] is True


def test_siamese_pair_row_encodes_each_text_as_if_alone(tiny_backbone_dir):
    """Two texts in one row with attention blocks + restarted positions == each text through the backbone alone."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from heads.codec import Row
    from hub.backbone import model_inputs, pad_rows

    model, tokenizer = AutoModel.from_pretrained(tiny_backbone_dir).eval(), AutoTokenizer.from_pretrained(tiny_backbone_dir)
    a, b = tokenizer("good movie")["input_ids"], tokenizer("the plot was very dull")["input_ids"]
    rows = [Row(a + b, [0] * (len(a) + len(b)), blocks=[0] * len(a) + [1] * len(b)),
            Row(a, [0] * len(a))]  # a plain row in the same batch
    batch = pad_rows(rows, 0)
    assert batch["position_ids"][0].tolist() == list(range(len(a))) + list(range(len(b)))
    with torch.inference_mode():
        together = model(**model_inputs(batch)).last_hidden_state
        alone_a = model(input_ids=torch.tensor([a])).last_hidden_state[0]
        alone_b = model(input_ids=torch.tensor([b])).last_hidden_state[0]
    assert torch.allclose(together[0, : len(a)], alone_a, atol=1e-5)
    assert torch.allclose(together[0, len(a):], alone_b, atol=1e-5)
    assert torch.allclose(together[1, : len(a)], alone_a, atol=1e-5)
    assert not torch.isnan(together).any()


def test_siamese_rows_carry_blocks_and_segments(tiny_hub):
    runtime = tiny_hub.runtime("similarity")
    assert runtime.codec.siamese
    row = runtime.codec.encode([("good movie", "the plot")])[0][0]
    assert row.blocks == row.extras["segments"] and set(row.blocks) == {0, 1}


def test_passes_hold_max_batch_size_rows_and_as_many_padded_tokens():
    """Short rows never pad to a long window's length, and long windows go fewer to a pass."""
    from heads.codec import Row
    from hub.router import PASS_ROW_TOKENS, RouterRow, _passes

    rows = [RouterRow(0, None, Row([0] * n, [])) for n in sorted([20] * 40 + [2 * PASS_ROW_TOKENS] * 54)]
    passes = _passes(rows, 64)
    assert [len(p) for p in passes] == [40, 32, 22] and sum(map(len, passes)) == len(rows)
    assert all(len(p) * max(len(r.row.input_ids) for r in p) <= 64 * PASS_ROW_TOKENS for p in passes)
    assert [len(p) for p in _passes(rows[:40] * 3, 64)] == [64, 56] and _passes([], 64) == []
