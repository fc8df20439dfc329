"""A server you can put on a network: unexpected errors are well-formed 500s on a connection that stays
usable, every outcome is counted, work per request is bounded and fair, a broken task leaves the others
serving, keys and hosts are checked, error bodies carry no server paths, and the OpenAPI says it all."""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

import hub
import hub.batching as batching
from conftest import write_registry
from hub.batching import DynamicBatcher, fair_shares
from hub.errors import DeadlineExceededError, RequestTooLargeError
from hub.server import ServerLimits, create_app, public_message, running_server

GOOD = {"task": "sentiment", "input": "a good movie"}
LONG_CONTEXT = {"task": "reader", "input": {"question": "what is good?", "context": " ".join(["the movie was good"] * 60)}}


def _status_count(metrics: str, status: str) -> float:
    line = next((line for line in metrics.splitlines() if line.startswith(f'hub_http_requests_total{{status="{status}"}}')), None)
    return float(line.split()[-1]) if line else 0.0


@pytest.fixture
def exploding(monkeypatch):
    """The sentiment codec fails unexpectedly (a bug, not bad input) for texts containing 'boom'."""
    from heads.classification.codec import TextCodec

    original = TextCodec.encode

    def encode(self, requests):
        if any("boom" in part for request in requests for part in request):
            raise RuntimeError("simulated bug in /secret/server/path")
        return original(self, requests)

    monkeypatch.setattr(TextCodec, "encode", encode)


def test_an_unexpected_error_is_a_json_500_the_connection_survives_and_it_is_counted(tiny_hub, exploding):
    with running_server(create_app(tiny_hub)) as url, httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(5):
            failed = client.post("/v1/run", json={"task": "sentiment", "input": "boom"})
            assert failed.status_code == 500
            message = failed.json()["error"]["message"]
            assert "error id" in message and "RuntimeError" not in message and "/secret" not in message
            ok = client.post("/v1/run", json=GOOD)  # the same keep-alive connection
            assert ok.status_code == 200 and ok.json()["result"]["task"] == "sentiment"
        metrics = client.get("/metrics").text
    assert _status_count(metrics, "500") == 5 and _status_count(metrics, "200") == 5


def test_every_outcome_is_counted(tiny_hub):
    limits = ServerLimits(max_body_bytes=2048, api_key="k3y")
    with TestClient(create_app(tiny_hub, limits), raise_server_exceptions=False) as client:
        auth = {"Authorization": "Bearer k3y"}
        assert client.post("/v1/run", json=GOOD).status_code == 401
        assert client.post("/v1/run", json={"task": "sentiment", "input": "x" * 4000}, headers=auth).status_code == 413
        assert client.post("/v1/run", json={"task": "nope", "input": "x"}, headers=auth).status_code == 404
        assert client.post("/v1/run", content=b"{", headers={**auth, "content-type": "application/json"}).status_code == 400
        assert client.post("/v1/run", json=GOOD, headers=auth).status_code == 200
        metrics = client.get("/metrics", headers=auth).text
    assert [_status_count(metrics, s) for s in ("401", "413", "404", "400", "200")] == [1, 1, 1, 1, 1]
    assert "hub_request_seconds_count 5.0" in metrics


def test_work_per_item_and_per_request_is_bounded(tiny_hub):
    limits = ServerLimits(max_rows_per_item=8, max_rows_per_request=12)
    with TestClient(create_app(tiny_hub, limits)) as client:
        big = client.post("/v1/run", json=LONG_CONTEXT)
        assert big.status_code == 413
        assert "windows" in big.json()["error"]["message"] and "limit is 8 per item" in big.json()["error"]["message"]
        medium = {"task": "reader", "input": {"question": "what is good?", "context": " ".join(["the movie was good"] * 8)}}
        many = client.post("/v1/run", json={"items": [medium] * 4})
        assert many.status_code == 413 and "limit is 12 per request" in many.json()["error"]["message"]
        assert client.post("/v1/run", json=medium).status_code == 200


def test_a_large_request_does_not_hold_small_ones_behind_it(tiny_hub, monkeypatch):
    """Rounds share rows fairly: a small request sent while a 60-window one runs is answered in the next round,
    long before the large one is done (each round waits for the test to let it run)."""
    original, rounds, gate, entered = batching.forward, [], threading.Semaphore(0), threading.Event()

    def gated(rows, max_batch_size):
        rounds.append(len(rows))
        entered.set()
        assert gate.acquire(timeout=20)
        return original(rows, max_batch_size)

    monkeypatch.setattr(batching, "forward", gated)
    with DynamicBatcher(tiny_hub, max_batch_size=4, max_wait_ms=0) as batcher:
        large = batcher.submit([("reader", LONG_CONTEXT["input"])])
        assert entered.wait(10)  # the large one's first round is under way
        small = batcher.submit([("sentiment", "good")])
        for _ in range(2):  # this round, then the next: the small one's row is in it
            gate.release()
        assert small.result(10)[0]["task"] == "sentiment"
        assert not large.done()  # the small one did not wait for it
        for _ in range(200):
            gate.release()
        assert large.result(30)[0]["windows"] > 20
    assert max(rounds) <= 2 * 4  # a round runs at most ROUND_PASSES passes of max_batch_size rows


def test_fair_shares():
    assert fair_shares([100, 1, 1], 8) == [6, 1, 1]
    assert fair_shares([3, 3], 10) == [3, 3]
    assert fair_shares([10, 10, 10], 4) == [2, 1, 1]
    assert sum(fair_shares([5] * 20, 8)) == 8


def test_a_deadline_fails_the_request_and_drops_its_work(tiny_hub, monkeypatch):
    original, ran = batching.forward, []

    def slow(rows, max_batch_size):
        ran.append(len(rows))
        time.sleep(0.2)
        return original(rows, max_batch_size)

    monkeypatch.setattr(batching, "forward", slow)
    with DynamicBatcher(tiny_hub, max_batch_size=2, max_wait_ms=0, request_timeout_s=0.3) as batcher:
        late = batcher.submit([("reader", LONG_CONTEXT["input"])])
        with pytest.raises(DeadlineExceededError, match="deadline"):
            late.result(20)
        assert batcher.deadline_misses == 1
    assert sum(ran) < 20  # most of its windows never ran


def test_http_deadline_answers_504(tiny_hub, monkeypatch):
    release = threading.Event()
    original = batching.forward
    monkeypatch.setattr(batching, "forward", lambda rows, size: release.wait(10) and original(rows, size))
    try:
        with TestClient(create_app(tiny_hub, ServerLimits(request_timeout_s=0.3, ready_stall_s=0.2))) as client:
            response = client.post("/v1/run", json=GOOD)
            assert response.status_code == 504 and "within" in response.json()["error"]["message"]
            assert client.get("/health/ready").status_code == 503  # the worker is stuck in its round
            assert client.get("/health/live").status_code == 200
            release.set()
            time.sleep(0.3)
            assert client.get("/health/ready").json()["status"] == "ready"
    finally:
        release.set()


def _registry_with_broken_task(tmp_path, trained_registry):
    shutil.copytree(trained_registry.parent / "adapters", tmp_path / "adapters")
    document = yaml.safe_load(trained_registry.read_text())
    (tmp_path / "adapters" / "paraphrase" / "head.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "adapters" / "similarity" / "head.safetensors").unlink()
    return write_registry(tmp_path, document)


def test_a_broken_folder_leaves_the_other_tasks_serving(tmp_path, trained_registry):
    loaded = hub.Hub.load(_registry_with_broken_task(tmp_path, trained_registry))
    listed = {t["task"]: t for t in loaded.tasks()}
    assert "lacks head.safetensors" in listed["similarity"]["unavailable"] and "unavailable" not in listed["sentiment"]
    with TestClient(create_app(loaded)) as client:
        assert client.post("/v1/run", json=GOOD).status_code == 200
        for task, value in (("similarity", ["a", "b"]), ("paraphrase", ["a", "b"])):
            response = client.post("/v1/run", json={"task": task, "input": value})
            assert response.status_code == 503, response.text
            message = response.json()["error"]["message"]
            assert "unavailable" in message and str(tmp_path) not in message
        tasks = {t["task"]: t for t in client.get("/v1/tasks").json()["tasks"]}
        assert set(client.get("/health").json()["unavailable_tasks"]) == {"similarity", "paraphrase"}
        assert "unavailable" in tasks["paraphrase"] and str(tmp_path) not in tasks["paraphrase"]["unavailable"]
        assert "hub_tasks_unavailable 2.0" in client.get("/metrics").text
        assert client.post("/v1/run", json=GOOD).status_code == 200


def test_serving_never_downloads_unless_allowed(tmp_path, trained_registry):
    document = yaml.safe_load(trained_registry.read_text())
    document["tasks"][0].update(hub="someone/sentiment@main", adapter="adapters/from-hub")
    loaded = hub.Hub.load(write_registry(tmp_path, document), allow_fetch=False)
    with TestClient(create_app(loaded)) as client:
        response = client.post("/v1/run", json=GOOD)
    assert response.status_code == 503 and "hub fetch sentiment" in response.json()["error"]["message"]
    assert not (tmp_path / "adapters" / "from-hub").exists()


def test_api_key_hosts_and_cors(tiny_hub):
    limits = ServerLimits(api_key="s3cret", allowed_hosts=("localhost", "*.example.org"), cors_origins=("https://app.example.org",))
    with TestClient(create_app(tiny_hub, limits), base_url="http://localhost") as client:
        for path in ("/v1/tasks", "/health", "/metrics"):
            refused = client.get(path)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", path
        assert client.get("/health/live").status_code == 200 and client.get("/openapi.json").status_code == 200
        assert client.post("/v1/run", json=GOOD, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/v1/run", json=GOOD, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/v1/run", json=GOOD, headers={"X-API-Key": "s3cret"}).status_code == 200
        rebound = client.get("/health/live", headers={"Host": "attacker.test"})
        assert rebound.status_code == 400 and rebound.json()["error"]["type"] == "host_not_allowed"
        assert client.get("/health/live", headers={"Host": "api.example.org:8000"}).status_code == 200
        preflight = client.options("/v1/run", headers={"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "authorization"})
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.org"
        other = client.options("/v1/run", headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers


def test_unknown_task_lists_a_few_close_names_not_the_registry(tiny_hub):
    with TestClient(create_app(tiny_hub)) as client:
        message = client.post("/v1/run", json={"task": "sentimen", "input": "x"}).json()["error"]["message"]
    assert "Did you mean 'sentiment'?" in message and "relations" not in message and "GET /v1/tasks" in message


def test_public_message_strips_server_paths(tmp_path):
    (tmp_path / "adapters" / "x").mkdir(parents=True)
    (tmp_path / "adapters" / "x" / "head.safetensors").write_bytes(b"")
    message = f"{tmp_path}/adapters/x/head.safetensors is broken; also {tmp_path.parent}/other.yaml; see GET /v1/tasks."
    assert public_message(message, tmp_path) == "adapters/x/head.safetensors is broken; also other.yaml; see GET /v1/tasks."


def test_openapi_is_exact_and_docs_work_offline(tiny_hub):
    with TestClient(create_app(tiny_hub)) as client:
        schema = client.get("/openapi.json").json()
        docs = client.get("/docs").text
        asset = client.get("/static-offline-docs/swagger-ui-bundle.js")
    body = schema["components"]["schemas"]["RunRequest"]
    assert body["oneOf"][0]["$ref"].endswith("/RunItem") and body["oneOf"][1]["required"] == ["items"]
    items = {branch["title"]: branch for branch in schema["components"]["schemas"]["RunItem"]["oneOf"]}
    assert set(items) == {t.name for t in tiny_hub.registry.tasks}
    assert all(b["additionalProperties"] is False and b["required"] == ["task", "input"] for b in items.values())
    pair = items["paraphrase"]["properties"]["input"]["anyOf"]
    assert pair[0]["minItems"] == pair[0]["maxItems"] == 2 and pair[1]["required"] == ["first", "second"]
    responses = schema["paths"]["/v1/run"]["post"]["responses"]
    assert {"200", "400", "404", "413", "422", "500", "503", "504"} <= set(responses)
    assert responses["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "cdn" not in docs and "https://" not in docs and asset.status_code == 200 and len(asset.content) > 100_000


def test_limits_are_checked_for_work_and_deadlines(tiny_hub):
    for bad in ({"max_rows_per_item": 0}, {"max_rows_per_request": -1}, {"request_timeout_s": 0}):
        with pytest.raises(hub.HubError, match="batcher limits"):
            DynamicBatcher(tiny_hub, **bad)
    assert issubclass(RequestTooLargeError, hub.InputError)  # Python callers catching InputError catch it too
