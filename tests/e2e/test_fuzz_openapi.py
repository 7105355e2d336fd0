"""Property-based fuzzing of every route from the app's own /openapi.json (bounded)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.helpers import ADMIN

EXAMPLES_PER_ROUTE = 12
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def _fuzz(
    operation: Any, server: str, headers: dict[str, str], statuses: list[int], failures: list[str]
) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_ROUTE,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(base_url=server, headers=headers, checks=CHECKS)
        statuses.append(response.status_code)

    try:
        run()
    except Exception as exc:  # noqa: BLE001 - collect every route's failure, then report them all
        failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:500]}")


@pytest.mark.slow
def test_no_server_errors_and_responses_match_the_schema(server: str) -> None:
    token = httpx.post(
        f"{server}/api/users/login", json={"email": ADMIN[0], "password": ADMIN[1]}
    ).json()["token"]
    # As ADMIN, so the fuzzer reaches past authentication into every route's validation.
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    failures: list[str] = []
    statuses: list[int] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        _fuzz(operation, server, headers, statuses, failures)
    assert len(operations) >= 15
    assert not failures, "\n\n".join(failures)
    # The fuzzer really reached the routes, and past their validation some of the time.
    assert len(statuses) >= len(operations) * 3, statuses
    assert any(200 <= s < 300 for s in statuses) and any(s == 400 for s in statuses)
