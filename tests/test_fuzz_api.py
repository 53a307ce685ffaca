"""Every endpoint fuzzed from the OpenAPI document: no input yields a server error, and every
answer is one the document declares (status, content type, body schema).

The SSE endpoints are left to ``test_properties.py``: a valid request to them streams forever,
which a request/response fuzzer cannot judge.
"""

from __future__ import annotations

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from broker.front.openapi import DOCUMENT
from tests.stack import Front

schema = schemathesis.openapi.from_dict(msgspec.json.decode(DOCUMENT)).exclude(
    path_regex=r".*/stream$"
)


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@pytest.mark.timeout(240)
def test_no_server_error_and_only_documented_answers(case: schemathesis.Case, lone_front: Front) -> None:
    # Whether a schema-valid body is accepted depends on the model catalogue and on the
    # conversation's state (a run may be active), so acceptance is not required; everything
    # else is: no 5xx, declared statuses and bodies, and invalid input refused.
    case.call_and_validate(base_url=lone_front.url, excluded_checks=[positive_data_acceptance])
