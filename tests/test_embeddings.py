"""Contextual embeddings (hub/embeddings.py): what the backbone (or a task's adapter) computes, pooled or per token
with character offsets, through the router in mixed batches, over OpenAI's embeddings API; bad requests refused."""

from __future__ import annotations

import base64
import random

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoTokenizer, BertModel

import hub
from hub.embeddings import embedding_task_name
from hub.server import ServerLimits, create_app, running_server

from conftest import assert_same_result, random_request

TEXTS = ["the movie was good", "a very dull plot, it is", "love"]


@pytest.fixture(scope="module")
def served(trained_registry):
    return hub.Hub.load(trained_registry)


@pytest.fixture(scope="module")
def reference(tiny_backbone_dir):
    """The tiny backbone's own outputs by plain transformers: every layer of each text."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    model = BertModel.from_pretrained(tiny_backbone_dir).eval()

    def layers(text: str) -> tuple[torch.Tensor, list[int]]:
        encoded = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            out = model(**encoded, output_hidden_states=True)
        return torch.stack(out.hidden_states)[:, 0], encoded["input_ids"][0].tolist()

    return layers


def test_pooled_vectors_are_the_backbones_own(served, reference):
    for pooling, layers in [("mean", "last"), ("cls", "last"), ("mean", 1), ("cls", 0), ("mean", -2)]:
        results = served.embed(TEXTS, "tiny", layers, pooling)
        for text, result in zip(TEXTS, results):
            states, ids = reference(text)
            chosen = states[-1 if layers == "last" else layers]
            expected = chosen.mean(0) if pooling == "mean" else chosen[0]
            assert torch.allclose(torch.tensor(result["embedding"]), expected, atol=1e-5), (pooling, layers)
            assert result["token_count"] == len(ids) and "truncated" not in result
    unit = served.embed(TEXTS[0], "tiny", unit=True)["embedding"]
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(unit / np.linalg.norm(unit), unit)


def test_per_token_vectors_carry_character_offsets_and_skip_special_tokens(served, reference):
    text = "Good  movie!"
    result = served.embed(text, "tiny", pooling="tokens")
    states, ids = reference(text)
    assert len(result["tokens"]) == len(ids) - 2  # [CLS] and [SEP] are not the text's
    for token, vector in zip(result["tokens"], states[-1][1:-1]):
        assert text[token["start"]:token["end"]].lower() == token["token"].removeprefix("##")
        assert torch.allclose(torch.tensor(token["embedding"]), vector, atol=1e-5)


def test_a_tasks_adapter_changes_the_vectors_and_mix_reads_its_heads_weights(served):
    alone = served.embed(TEXTS, "tiny")
    through = served.embed(TEXTS, "sentiment")
    assert not np.allclose(alone[0]["embedding"], through[0]["embedding"], atol=1e-4)
    runtime = served.runtime("sentiment")
    rows = [row for rows in runtime.codec.encode([(text,) for text in TEXTS]) for row in rows]
    with torch.inference_mode():
        features = runtime.backbone.encode(rows, [runtime.adapter] * len(rows))
    mask = features["attention_mask"].unsqueeze(-1).float()
    expected = (features["last_hidden_state"] * mask).sum(1) / mask.sum(1)
    assert torch.allclose(torch.tensor([r["embedding"] for r in through]), expected, atol=1e-5)
    mixed = served.embed(TEXTS[0], "entities", layers="mix")  # entities' head learned a mix of layers
    assert len(mixed["embedding"]) == 32
    with pytest.raises(hub.InputError, match="learned layer mix of a task's head"):
        served.embed(TEXTS[0], "sentiment", layers="mix")


def test_embeddings_in_mixed_batches_answer_as_alone(served):
    rng = random.Random(5)
    names = [embedding_task_name("tiny"), embedding_task_name("sentiment", 1, "cls", True),
             embedding_task_name("tiny", "last", "tokens")]
    requests = [random_request(rng) for _ in range(16)]
    for i, name in enumerate(names):
        requests.insert(4 * i + 1, (name, TEXTS[i]))
    for request, together in zip(requests, served.run_many(requests)):
        alone = served.run(*request)
        if request[0].startswith("embed:"):
            if "embedding" in alone:
                assert np.allclose(together["embedding"], alone["embedding"], atol=1e-4)
            else:
                assert [t["start"] for t in together["tokens"]] == [t["start"] for t in alone["tokens"]]
                assert np.allclose([t["embedding"] for t in together["tokens"]],
                                   [t["embedding"] for t in alone["tokens"]], atol=1e-4)
        else:
            assert_same_result(together, alone)


def test_a_text_longer_than_the_window_is_cut_and_flagged(served):
    long = " ".join(["movie"] * 200)
    result = served.embed(long, "tiny", pooling="tokens")
    window = served.registry.backbone("tiny").max_length
    assert result["truncated"] is True and len(result["tokens"]) == window - 2  # [CLS] and [SEP] are in the window
    assert served.embed(long, "tiny")["truncated"] is True


@pytest.mark.parametrize("call, message", [
    (lambda h: h.embed("", "tiny"), "non-empty text"),
    (lambda h: h.embed(None, "tiny"), "got NoneType"),
    (lambda h: h.embed("\u200b\u200b", "tiny"), "no tokens the model can read"),
    (lambda h: h.embed("bad \ud800", "tiny"), "lone surrogate"),
    (lambda h: h.embed("text", "tiny", layers=3), "layers 0 \\(the embeddings\\) to 2"),
    (lambda h: h.embed("text", "tiny", layers="last4"), "this backbone has 2"),
    (lambda h: h.embed("text", "tiny", layers="first"), "layers='first'"),
    (lambda h: h.embed("text", "tiny", pooling="max"), "pooling='max'"),
    (lambda h: h.embed("text", "nope"), "'nope' to embed with is neither a backbone \\(tiny\\) nor a task"),
    (lambda h: h.run("embed:tiny:last", "text"), "not an embedding request name"),
])
def test_bad_embedding_requests_are_refused_with_the_fix(served, call, message):
    with pytest.raises(hub.InputError, match=message):
        call(served)


def test_the_openai_shaped_endpoint(served):
    with TestClient(create_app(served, ServerLimits(max_items=8)), raise_server_exceptions=False) as client:
        body = client.post("/v1/embeddings", json={"model": "tiny", "input": TEXTS}).json()
        assert body["object"] == "list" and body["model"] == "tiny" and [d["index"] for d in body["data"]] == [0, 1, 2]
        unit = served.embed(TEXTS, "tiny", unit=True)
        assert all(np.allclose(d["embedding"], u["embedding"], atol=1e-6) for d, u in zip(body["data"], unit))
        assert body["usage"]["prompt_tokens"] == sum(u["token_count"] for u in unit) == body["usage"]["total_tokens"]
        packed = client.post("/v1/embeddings", json={"model": "sentiment", "input": "love", "encoding_format": "base64",
                                                     "normalize": False, "pooling": "cls", "layers": 1}).json()
        decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
        assert np.allclose(decoded, served.embed("love", "sentiment", 1, "cls")["embedding"], atol=1e-6)
        for payload, status, text in [
            ({"model": "tiny", "input": [[1, 2, 3]]}, 422, "input"),
            ({"model": "tiny", "input": "x", "dimensions": 8}, 422, "gives vectors of 32"),
            ({"model": "nope", "input": "x"}, 422, "neither a backbone"),
            ({"model": "tiny", "input": "x", "pooling": "tokens"}, 422, "pooling"),
            ({"model": "tiny", "input": ""}, 422, "non-empty text"),
            ({"model": "tiny", "input": []}, 422, "empty list"),
            ({"model": "tiny", "input": ["x"] * 9}, 413, "limit is 8"),
        ]:
            answer = client.post("/v1/embeddings", json=payload)
            assert answer.status_code == status and text in answer.json()["error"]["message"], answer.text


def test_openais_own_client_reads_the_endpoint(served):
    from openai import OpenAI

    with running_server(create_app(served)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answer = client.embeddings.create(model="tiny", input=TEXTS)  # the client asks for base64 and decodes it
    expected = served.embed(TEXTS, "tiny", unit=True)
    assert [item.index for item in answer.data] == [0, 1, 2]
    assert all(np.allclose(item.embedding, e["embedding"], atol=1e-6) for item, e in zip(answer.data, expected))
    assert answer.usage.prompt_tokens == sum(e["token_count"] for e in expected)
