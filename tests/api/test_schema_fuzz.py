"""Bad input at scale: schemathesis generates requests from the app's own OpenAPI schema and
checks that nothing answers 5xx and every documented response matches its schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.servers import ApiServer, survivors

EXAMPLES_PER_OPERATION = 12


def test_no_server_errors_and_valid_responses(tmp_path: Path, models_dir: Path, db_url: str) -> None:
    server = ApiServer(tmp_path, models_dir, max_message_chars="2000", db_url=db_url)
    server.start(quiet=True)
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 15
        statuses: list[int] = []

        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case: schemathesis.Case) -> None:
                if case.path == "/load" and isinstance(case.body, dict):
                    # Random chat ids would each load a real model; names and the rest stay fuzzed.
                    case.body["device"] = "gpu" if case.body.get("device") == "gpu" else "cpu"
                response = case.call_and_validate(
                    base_url=server.url, headers=server.headers,
                    checks=[not_a_server_error, response_schema_conformance], timeout=60,
                )
                statuses.append(response.status_code)

            try:
                check()
            except Exception as failure:  # name the operation that failed
                pytest.fail(f"{operation.method.upper()} {operation.path}: {failure}")
        assert len(statuses) >= 3 * len(operations)
        assert max(statuses) < 500 and {200, 404, 422} <= set(statuses), sorted(set(statuses))
        print(f"schemathesis: {len(statuses)} requests over {len(operations)} operations, "
              f"statuses {sorted(set(statuses))}")
    finally:
        assert not survivors(server.stop())
