"""The hub on Ray Serve (hub/ray_serve.py), on a local Ray cluster on 127.0.0.1 that this module starts and stops:
`hub serve`'s HTTP API from two replicas; mixed concurrent traffic answered as single requests are; tasks of many
kinds meeting in one backbone pass inside a replica; requests routed to the replica that holds their task; a full
queue answered 503 with Retry-After; a replica killed mid-traffic without a request lost silently."""

from __future__ import annotations

import itertools
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import assert_same_result, random_request

import hub
from hub.errors import InputError, UnknownTaskError
from hub.ray_serve import RayServeOptions, TaskLease, _raise_remote, routing_task

ray = pytest.importorskip("ray", reason="Ray Serve is not installed: pip install -e '.[test]' (ray[serve])")
serve = pytest.importorskip("ray.serve")

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(trained_registry):
    """A local Ray cluster (127.0.0.1 only) running the hub app with two replicas, and a second app ("small": one
    replica that takes one request at a time and queues one more) for back-pressure."""
    from hub.ray_serve import build_app

    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app({"registry": str(trained_registry), "replicas": 2, "tasks_per_replica": 4,
                             "max_ongoing_requests": 16, "max_queued_requests": 200, "num_cpus": 1}),
                  name="hub", route_prefix="/")
        serve.run(build_app({"registry": str(trained_registry), "replicas": 1, "max_ongoing_requests": 1,
                             "max_queued_requests": 1, "num_cpus": 1}), name="small", route_prefix="/small")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def client(cluster):
    with httpx.Client(base_url=cluster, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def local(trained_registry) -> hub.Hub:
    return hub.Hub.load(trained_registry)


def _post(client: httpx.Client, task: str, value) -> httpx.Response:
    return client.post("/v1/run", json={"task": task, "input": list(value) if isinstance(value, tuple) else value})


def test_routing_task_is_the_most_frequent_then_the_first():
    assert routing_task([("a", 1)]) == "a"
    assert routing_task([("a", 1), ("b", 2), ("b", 3)]) == "b"
    assert routing_task([("c", 1), ("a", 2), ("a", 3), ("c", 4), ("b", 5)]) == "c"


def test_replica_refusals_are_raised_again_as_their_class():
    with pytest.raises(InputError, match="bad text"):
        _raise_remote("InputError", "bad text")
    with pytest.raises(UnknownTaskError) as caught:
        _raise_remote("UnknownTaskError", "unknown task 'x'. The registry serves 2 task(s)")
    assert str(caught.value) == "unknown task 'x'. The registry serves 2 task(s)"


def test_a_task_lease_drops_its_task_once(local):
    local.runtime("sentiment")
    lease = TaskLease(local, "sentiment")
    lease.__del__()  # what Serve calls when its LRU evicts the task
    assert not local.cache.loaded("sentiment")
    local.runtime("sentiment")  # loaded again, for a new lease
    lease.__del__()  # the old lease garbage-collected later: the new load stays
    assert local.cache.loaded("sentiment")


def test_the_documented_serve_config_is_valid_for_serve_and_the_app():
    from ray.serve.schema import ServeDeploySchema

    document = yaml.safe_load((ROOT / "deploy" / "ray_serve.yaml").read_text())
    ServeDeploySchema.model_validate(document)
    (application,) = document["applications"]
    assert application["import_path"] == "hub.ray_serve:build_app"
    options = RayServeOptions.model_validate(application["args"])
    assert (ROOT / options.registry).is_file() and options.server_limits().max_queue == 1024
    with pytest.raises(ValueError, match="replicas"):
        RayServeOptions.model_validate({**application["args"], "replicas": 0})


def test_hub_ray_serve_refuses_bad_options_before_starting_ray(tmp_path):
    from typer.testing import CliRunner

    from hub.cli import app

    def refused(*arguments: str) -> str:
        result = CliRunner().invoke(app, ["ray-serve", *arguments])
        assert result.exit_code != 0
        return " ".join(result.output.split())  # the console wraps long lines

    assert "is not a file; give the registry.yaml to serve" in refused("--registry", str(tmp_path / "absent.yaml"))
    (tmp_path / "bad.yaml").write_text("- a list\n")
    assert "give a mapping of Ray Serve options" in refused("--config", str(tmp_path / "bad.yaml"))
    (tmp_path / "typo.yaml").write_text("replica: 2\n")
    typo = refused("--config", str(tmp_path / "typo.yaml"))
    assert "replica" in typo and "Extra inputs are not permitted" in typo
    assert not ray.is_initialized()


def test_the_ray_app_is_hub_serves_api(client, local):
    from fastapi.testclient import TestClient

    from hub.server import create_app

    with TestClient(create_app(local)) as alone:
        assert ({t["task"] for t in client.get("/v1/tasks").json()["tasks"]}
                == {t["task"] for t in alone.get("/v1/tasks").json()["tasks"]})
        assert set(client.get("/openapi.json").json()["paths"]) == set(alone.get("/openapi.json").json()["paths"])
    missing = _post(client, "sentimnet", "good")
    assert missing.status_code == 404 and "Did you mean 'sentiment'" in missing.json()["error"]["message"]
    empty = _post(client, "sentiment", "\u200b")
    assert empty.status_code == 422 and empty.json()["error"]["type"] == "invalid_input"
    assert client.get("/health/ready").json()["status"] == "ready"
    assert client.get("/health").json()["backend"] == "ray_serve"


def test_mixed_concurrent_traffic_answers_as_single_requests_and_shares_passes(client, local):
    rng = random.Random(11)
    singles = [random_request(rng) for _ in range(60)]
    batches = [[random_request(rng) for _ in range(rng.randint(2, 6))] for _ in range(15)]

    def send(job):
        if isinstance(job, list):
            body = {"items": [{"task": t, "input": list(v) if isinstance(v, tuple) else v} for t, v in job]}
            return job, client.post("/v1/run", json=body)
        return [job], _post(client, *job)

    jobs: list = singles + batches
    rng.shuffle(jobs)
    with ThreadPoolExecutor(12) as pool:
        answered = list(pool.map(send, jobs))
    for requests, response in answered:
        assert response.status_code == 200, response.text
        body = response.json()
        results = body["results"] if "results" in body else [body["result"]]
        for (task, value), result in zip(requests, results, strict=True):
            assert_same_result(result, local.run(task, value))
    replicas = client.get("/health").json()["replicas"]
    assert len(replicas) == 2  # both replicas answered
    assert sum(r["mixed_rounds"] for r in replicas.values()) > 0  # tasks met in one backbone pass on a replica
    assert all(r["resident_tasks"] <= 4 for r in replicas.values())  # tasks_per_replica bounds each working set


def test_requests_go_to_the_replica_that_holds_their_task(client):
    for task, value in (("sentiment", "good"), ("entities", "bad plot"), ("spans", "good movie")):
        _post(client, task, value)  # loaded somewhere now
    listed = {t["task"]: t["loaded"] for t in client.get("/v1/tasks").json()["tasks"]}
    assert listed["sentiment"] and listed["entities"] and listed["spans"]
    replicas = client.get("/health").json()["replicas"]
    assert {"sentiment", "entities", "spans"} <= {task for r in replicas.values() for task in r["resident"]}
    before = client.get("/health").json()["routing"]
    for _ in range(10):
        for task, value in (("sentiment", "good"), ("entities", "bad plot"), ("spans", "good movie")):
            assert _post(client, task, value).status_code == 200
    after = client.get("/health").json()["routing"]
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    assert hits + misses == 30 and hits / 30 >= 0.9, (hits, misses)
    metrics = client.get("/metrics").text
    assert 'hub_ray_routed_total{outcome="hit"}' in metrics and "hub_replica_rounds_total" in metrics


def test_a_full_queue_is_answered_503_with_retry_after(client):
    text = " ".join(["good movie"] * 200)  # a few windows each: requests stay in the replica a while

    def send(_):
        return client.post("/small/v1/run", json={"task": "entities", "input": text})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(send, range(32)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["Retry-After"] == "1" and refused.json()["error"]["type"] == "overloaded"
    assert "add replicas" in refused.json()["error"]["message"]


def _traffic_with_a_kill(client, requests: list) -> list:
    """Send `requests` from 12 threads; once 30 are answered, kill the replica that answered last (its actor)."""
    done = threading.Event()
    answered_so_far = itertools.count(1)

    def send(request):
        response = _post(client, *request)
        if next(answered_so_far) == 30:
            done.set()
        return request, response

    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(send, request) for request in requests]
        assert done.wait(120)
        replicas = client.get("/health").json()["replicas"].values()
        busiest = max(replicas, key=lambda counters: counters["updated"])["replica"]  # the one answering right now
        ray.kill(ray.get_actor(busiest, namespace="serve"), no_restart=True)
        return [future.result() for future in futures]


def _until_serving(client) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Serve replaces the replica; the app keeps answering
        if _post(client, "sentiment", "good").status_code == 200 and len(client.get("/health").json()["replicas"]):
            return
        time.sleep(1)
    raise AssertionError("the app did not answer again within 120 s of a replica's death")


def test_a_replica_killed_mid_traffic_loses_no_request_silently(client, local):
    """Requests of a few windows each keep work in flight on every replica; a kill that still happens to land
    between requests (nothing lost to count) is tried again, at most three times."""
    rng = random.Random(5)
    words = ["good", "bad", "movie", "plot", "the", "sad"]
    outcomes = {"ok": 0, "unavailable": 0, "overloaded": 0}
    for _ in range(3):
        requests = [(rng.choice(["entities", "spans", "sentiment", "joint"]), " ".join(rng.choices(words, k=80)))
                    for _ in range(120)]
        for (task, value), response in _traffic_with_a_kill(client, requests):
            if response.status_code == 200:
                assert_same_result(response.json()["result"], local.run(task, value))
                outcomes["ok"] += 1
            else:  # refused with the reason, never a 500 or a dropped connection
                assert response.status_code == 503 and response.headers["Retry-After"] == "1", response.text
                outcomes[response.json()["error"]["type"]] += 1
        _until_serving(client)
        if client.get("/health").json()["routing"]["lost"]:
            break
    assert outcomes["ok"] > 0, outcomes
    routing = client.get("/health").json()["routing"]
    assert routing["lost"] >= 1  # the kill hit requests in flight: each failed call is counted
    # every failed call was retried, or was a refused request's last try: none vanished
    assert routing["lost"] == routing["retried"] + outcomes["unavailable"], (routing, outcomes)

