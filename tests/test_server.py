"""The HTTP API: answers, the task list, health, Prometheus metrics, clear 4xx errors for malformed
requests (a fuzz list), and mixed concurrent traffic where every answer is its own task's."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import assert_same_result, random_request
from hub.server import ServerLimits, create_app, running_server

LIMITS = ServerLimits(max_body_bytes=4096, max_items=8)


@pytest.fixture
def client(tiny_hub):
    with TestClient(create_app(tiny_hub, LIMITS), raise_server_exceptions=False) as client:
        yield client


def _json(value) -> list:
    """A request input as JSON has it (tuples become lists)."""
    return json.loads(json.dumps(value))


def test_one_item_and_many_items(client, tiny_hub):
    one = client.post("/v1/run", json={"task": "sentiment", "input": "a good movie"})
    assert one.status_code == 200
    assert_same_result(one.json()["result"], tiny_hub.run("sentiment", "a good movie"))
    items = [("paraphrase", ("a book", "the book")), ("reader", {"question": "what is good?", "context": "the movie was good"}),
             ("entities", ["the", "good", "movie"]), ("relations", {"text": "good beats bad", "head": [0, 4], "tail": [11, 14]})]
    many = client.post("/v1/run", json={"items": [{"task": t, "input": _json(v)} for t, v in items]})
    assert many.status_code == 200
    for got, (task, value) in zip(many.json()["results"], items):
        assert_same_result(got, tiny_hub.run(task, tuple(value) if isinstance(value, list) else value))


def test_tasks_health_metrics_and_docs(client):
    client.post("/v1/run", json={"items": [{"task": "sentiment", "input": "good"}, {"task": "paraphrase", "input": ["a", "b"]}]})
    tasks = {t["task"]: t for t in client.get("/v1/tasks").json()["tasks"]}
    assert tasks["sentiment"]["loaded"] and not tasks["relations"]["loaded"] and tasks["relations"]["trained"]
    assert tasks["paraphrase"]["inputs"] == ["first", "second"]
    assert client.get("/health").json() == {"status": "ok", "queued_items": 0, "loaded_tasks": 2, "device": "cpu",
                                           "dtype": "float32", "compiled": False,
                                           "unavailable_tasks": {}}
    metrics = client.get("/metrics").text
    for line in ('hub_http_requests_total{status="200"} 1.0', 'hub_items_total{task="sentiment"} 1.0',
                 "hub_batch_items_count 1.0", "hub_adapter_cache_misses_total 2.0", "hub_adapter_cache_resident_tasks 2.0",
                 "hub_request_seconds_count 1.0", "hub_queue_items 0.0"):
        assert line in metrics, line
    assert "/v1/run" in client.get("/openapi.json").json()["paths"]


GOOD = {"task": "sentiment", "input": "good"}
MALFORMED: list[tuple[str, object, int, str]] = [  # (what, body: bytes = raw, else JSON), status, message part
    ("truncated JSON", b'{"task": "sentiment", "input": ', 400, "not valid JSON"),
    ("single quotes", b"{'task': 'sentiment'}", 400, "not valid JSON"),
    ("trailing comma", b'{"task": "sentiment", "input": "x",}', 400, "not valid JSON"),
    ("two objects", b'{"task": "sentiment", "input": "x"}{}', 400, "not valid JSON"),
    ("bare word", b"sentiment", 400, "not valid JSON"),
    ("empty body", b"", 422, "body"),
    ("whitespace body", b"   ", 400, "not valid JSON"),
    ("invalid UTF-8", b'{"task": "sentiment", "input": "\xc3\x28"}', 400, "UTF-8"),
    ("latin-1 bytes", b'\xff\xfe{"task": 1}', 400, "UTF-8"),
    ("JSON null", None, 422, "object"),
    ("JSON list", [GOOD], 422, "object"),
    ("JSON number", 3, 422, "object"),
    ("JSON string", "sentiment", 422, "object"),
    ("JSON true", True, 422, "object"),
    ("no fields", {}, 422, "give 'task' and 'input'"),
    ("task only", {"task": "sentiment"}, 422, "give 'task' and 'input'"),
    ("input only", {"input": "good"}, 422, "give 'task' and 'input'"),
    ("both forms", {**GOOD, "items": [GOOD]}, 422, "not both"),
    ("unknown field", {**GOOD, "lang": "en"}, 422, "lang"),
    ("task is a number", {"task": 1, "input": "x"}, 422, "task"),
    ("task is null", {"task": None, "input": "x"}, 422, "give 'task' and 'input'"),
    ("task is a list", {"task": ["sentiment"], "input": "x"}, 422, "task"),
    ("task is empty", {"task": "", "input": "x"}, 422, "task"),
    ("task name too long", {"task": "s" * 300, "input": "x"}, 422, "task"),
    ("unknown task", {"task": "sentimant", "input": "x"}, 404, "Did you mean 'sentiment'"),
    ("wrong case task", {"task": "Sentiment", "input": "x"}, 404, "unknown task"),
    ("empty text", {"task": "sentiment", "input": ""}, 422, "empty"),
    ("whitespace text", {"task": "sentiment", "input": " \n\t"}, 422, "empty"),
    ("input null", {"task": "sentiment", "input": None}, 422, "sentiment"),
    ("input number", {"task": "sentiment", "input": 5}, 422, "sentiment"),
    ("input bool", {"task": "sentiment", "input": True}, 422, "sentiment"),
    ("text task given a pair", {"task": "sentiment", "input": ["a", "b"]}, 422, "one text"),
    ("text task given an object", {"task": "sentiment", "input": {"foo": "bar"}}, 422, "keys"),
    ("pair given one text", {"task": "paraphrase", "input": "only one"}, 422, "pair"),
    ("pair given three", {"task": "paraphrase", "input": ["a", "b", "c"]}, 422, "pair"),
    ("pair of numbers", {"task": "paraphrase", "input": [1, 2]}, 422, "pair"),
    ("pair missing a key", {"task": "paraphrase", "input": {"first": "a"}}, 422, "second"),
    ("nested lists", {"task": "paraphrase", "input": [["a"], ["b"]]}, 422, "pair"),
    ("QA as text", {"task": "reader", "input": "what?"}, 422, "question"),
    ("QA empty question", {"task": "reader", "input": {"question": "", "context": "c"}}, 422, "question is empty"),
    ("QA empty context", {"task": "reader", "input": {"question": "q", "context": " "}}, 422, "context is empty"),
    ("QA missing context", {"task": "reader", "input": {"question": "q"}}, 422, "keys"),
    ("QA one-element list", {"task": "reader", "input": ["q"]}, 422, "question"),
    ("QA numbers", {"task": "reader", "input": {"question": 1, "context": "c"}}, 422, "not a string"),
    ("tagging empty tokens", {"task": "entities", "input": []}, 422, "empty token list"),
    ("tagging blank token", {"task": "entities", "input": ["ok", " "]}, 422, "token #1"),
    ("tagging number token", {"task": "entities", "input": ["ok", 3]}, 422, "token #1"),
    ("tagging two keys", {"task": "entities", "input": {"text": "a", "tokens": ["a"]}}, 422, "keys"),
    ("spans empty text", {"task": "spans", "input": {"text": ""}}, 422, "empty"),
    ("relation without tail", {"task": "relations", "input": {"text": "good beats bad", "head": [0, 4]}}, 422, "tail"),
    ("relation reversed span", {"task": "relations", "input": {"text": "good beats bad", "head": [4, 0], "tail": [11, 14]}}, 422, "outside"),
    ("relation same spans", {"task": "relations", "input": {"text": "good beats bad", "head": [0, 4], "tail": [0, 4]}}, 422, "same span"),
    ("relation float offsets", {"task": "relations", "input": {"text": "good beats bad", "head": [0, 4.5], "tail": [11, 14]}}, 422, "integers"),
    ("relation text offsets", {"task": "relations", "input": {"text": "good beats bad", "head": ["a", "b"], "tail": [11, 14]}}, 422, "integers"),
    ("relation unmarked text", {"task": "relations", "input": "good beats bad"}, 422, "<e1>"),
    ("items empty", {"items": []}, 422, "items"),
    ("items not a list", {"items": GOOD}, 422, "items"),
    ("items of numbers", {"items": [1, 2]}, 422, "items.0"),
    ("item without input", {"items": [GOOD, {"task": "sentiment"}]}, 422, "items.1.input"),
    ("item with unknown task", {"items": [GOOD, {"task": "nope", "input": "x"}]}, 404, "unknown task 'nope'"),
    ("item with bad input", {"items": [GOOD, {"task": "paraphrase", "input": "x"}]}, 422, "request #1"),
    ("too many items", {"items": [GOOD] * 9}, 413, "limit is 8"),
    ("huge body", {"task": "sentiment", "input": "good " * 2000}, 413, "over 4,096 bytes"),
]


def test_fuzz_malformed_requests_get_clear_4xx_and_the_server_keeps_serving(client):
    assert len(MALFORMED) >= 50
    for what, body, status, message in MALFORMED:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = client.post("/v1/run", content=content, headers={"content-type": "application/json"})
        assert response.status_code == status, (what, response.status_code, response.text)
        error = response.json()["error"]
        assert message in error["message"] and len(error["message"]) > 20, (what, error)
    assert client.post("/v1/run", content=b'{"task": "sentiment"}', headers={"content-type": "text/plain"}).status_code == 422
    streamed = (part for part in (b'{"task": "sentiment", "input": "', b"x" * 5000, b'"}'))  # chunked: no Content-Length
    too_big = client.post("/v1/run", content=streamed, headers={"content-type": "application/json"})
    assert too_big.status_code == 413 and "over 4,096 bytes" in too_big.json()["error"]["message"]
    assert client.get("/v1/run").status_code == 405
    assert client.get("/nowhere").json()["error"]["message"].startswith("Not Found")
    assert client.post("/v1/run", json=GOOD).status_code == 200  # still serving
    refused = sum(float(line.split()[-1]) for line in client.get("/metrics").text.splitlines()
                  if line.startswith("hub_http_requests_total{status=\"4"))
    assert refused >= len(MALFORMED)


def test_a_full_queue_answers_503_with_retry_after(tiny_hub):
    app = create_app(tiny_hub, ServerLimits(max_queue=1))
    with TestClient(app) as client:
        response = client.post("/v1/run", json={"items": [GOOD, GOOD]})  # 2 items can never fit a 1-item queue
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "overloaded" in response.json()["error"]["message"]


def test_mixed_concurrent_traffic_gets_each_answer_from_its_own_task(tiny_hub, trained_registry):
    """Over real HTTP, 32 at a time: every answer equals the single-request answer for its own input."""
    import hub

    rng = random.Random(3)
    requests = [random_request(rng) for _ in range(240)]
    reference = hub.Hub.load(trained_registry)  # a separate Hub: answers computed one at a time
    expected = [reference.run(task, value) for task, value in requests]

    async def fire(url):
        limit = asyncio.Semaphore(32)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            async def one(task, value):
                async with limit:
                    return await http.post("/v1/run", json={"task": task, "input": _json(value)})
            return await asyncio.gather(*(one(t, v) for t, v in requests))

    with running_server(create_app(tiny_hub, ServerLimits(max_wait_ms=10))) as url:
        responses = asyncio.run(fire(url))
        batches = httpx.get(url + "/metrics").text
    assert [r.status_code for r in responses] == [200] * len(requests)
    for response, want in zip(responses, expected):
        assert_same_result(response.json()["result"], want)
    count = next(float(line.split()[-1]) for line in batches.splitlines() if line.startswith("hub_batch_items_count"))
    assert count < len(requests)  # requests shared batches
