"""Every endpoint fuzzed from the OpenAPI document: no input yields a server error, and every
answer is one the document declares (status, content type, body schema).

The front requires tokens (BROKER_AUTH=jwt), as the document declares: the fuzzer sends a valid
one, and checks on its own that a request without it is refused.

The SSE endpoints are left to ``test_properties.py``: a valid request to them streams forever,
which a request/response fuzzer cannot judge.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from broker.core.errors import REGISTRY
from broker.core.settings import Settings
from broker.front.app import create_app
from broker.front.openapi import BEFORE_ANY_ROUTE
from tests.stack import Front, Stack
from tests.tokens import AUTH, hs256

# The AI SDK's chat POST answers with its run's stream, which lasts as long as the run.
DOCUMENT = create_app(Settings(auth="none")).state.openapi
schema = schemathesis.openapi.from_dict(msgspec.json.decode(DOCUMENT)).exclude(
    path_regex=r".*/stream$|^/v1/ai-sdk/chat$"
)


TOKEN = hs256("fuzzer", ttl=3600)
BEFORE_ANY_ROUTE_CODES = frozenset(code.name for code in BEFORE_ANY_ROUTE)


@pytest.fixture(scope="module")
def secured_front(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    processes = Stack(redis_url, "m" + uuid.uuid4().hex[:12], tmp_path_factory.mktemp("front"))
    processes.start(fronts=1, workers=0, **AUTH)
    try:
        yield processes.fronts[0]
    finally:
        processes.close(report=False)


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@pytest.mark.timeout(240)
def test_no_server_error_and_only_documented_answers(
    case: schemathesis.Case, secured_front: Front
) -> None:
    # Whether a schema-valid body is accepted depends on the model catalogue and on the
    # conversation's state (a run may be active), so acceptance is not required; everything
    # else is: no 5xx, declared statuses and bodies, and invalid input refused.
    response = case.call(base_url=secured_front.url, headers={"Authorization": f"Bearer {TOKEN}"})
    # Headers HTTP itself forbids (a Content-Length of "-?") are refused below any route, with
    # an answer the document names once for every operation.
    if response.status_code < 500 and response.headers.get("content-type") == "application/json":
        error = msgspec.json.decode(response.content).get("error")
        if isinstance(error, dict) and error.get("code") in BEFORE_ANY_ROUTE_CODES:
            assert REGISTRY[error["code"]].status == response.status_code
            return
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
