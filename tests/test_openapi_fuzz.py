"""Schema fuzzing (schemathesis) over the server's own OpenAPI, against a real uvicorn on 127.0.0.1:
no input gives a 5xx, every status and body is the one the schema declares, and most generated
requests get past validation to a model (the share is asserted and printed)."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS

from hub.server import ServerLimits, create_app, running_server

LIMITS = ServerLimits(max_body_bytes=16 * 1024, max_items=8, request_timeout_s=30)
CHECK_NAMES = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance")


@pytest.fixture(scope="module")
def served(trained_registry):
    import hub

    with running_server(create_app(hub.Hub.load(trained_registry), LIMITS)) as url:
        yield url, schemathesis.openapi.from_url(url + "/openapi.json")


def _checks() -> list:
    return [check for check in CHECKS.get_all() if check.__name__ in CHECK_NAMES]


def _fuzz(schema, url: str, mode: GenerationMode, path: str, method: str, examples: int) -> Counter:
    statuses: Counter = Counter()
    strategy = schema[path][method].as_strategy(generation_mode=mode)

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        response = case.call(base_url=url, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=_checks())

    run()
    return statuses


def test_generated_requests_reach_the_models_and_never_get_a_5xx(served):
    url, schema = served
    statuses = _fuzz(schema, url, GenerationMode.POSITIVE, "/v1/run", "POST", 150)
    answered = statuses[200] / sum(statuses.values())
    print(f"\n/v1/run, schema-valid requests: {dict(statuses)}; {answered:.0%} answered by a model")
    assert not any(status >= 500 for status in statuses)
    assert answered >= 0.5, statuses  # most requests get past validation to a model


def test_invalid_requests_get_4xx_never_5xx(served):
    url, schema = served
    statuses = _fuzz(schema, url, GenerationMode.NEGATIVE, "/v1/run", "POST", 100)
    print(f"\n/v1/run, schema-invalid requests: {dict(statuses)}")
    assert statuses and all(400 <= status < 500 for status in statuses), statuses


@pytest.mark.parametrize("path", ["/v1/tasks", "/health", "/health/live", "/health/ready", "/metrics"])
def test_read_endpoints_conform(served, path):
    url, schema = served
    statuses = _fuzz(schema, url, GenerationMode.POSITIVE, path, "GET", 3)
    assert set(statuses) == {200}
