"""Property-based fuzz of the whole OpenAPI surface with schemathesis: hypothesis-generated requests
for every operation, as an admin (who reaches every route), must never get a 5xx.

(schemathesis' own pytest plugin does not load under pytest 9, so the operations are driven here:
one hypothesis run per operation.)"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.serve.conftest import Api, make_token

EXAMPLES_PER_OPERATION = 25


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # the production store
def test_no_generated_request_gets_a_server_error(api: Api) -> None:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", api.client.app)
    failures: list[str] = []
    operations = 0
    statuses: dict[int, int] = {}
    # One token while it lasts (the API remembers a checked token, as for a real client); a new one
    # after each request that may have revoked it (logout, DELETE /auth/tokens/{id}, a new password).
    admin_token = [make_token(api.platform, "admin")]
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            headers = {"Authorization": f"Bearer {admin_token[0]}"}
            response = case.call_and_validate(headers=headers, checks=[schemathesis.checks.not_a_server_error])
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if "/auth/" in case.path and case.method.upper() != "GET":  # it may have revoked the token
                admin_token[0] = make_token(api.platform, "admin")

        try:
            run()
        except Exception as exc:  # collect every failing operation, not just the first
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:600]}")
    assert operations >= 40
    print(f"{operations} operations, {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= operations * 5
    assert not failures, "\n\n".join(failures)
