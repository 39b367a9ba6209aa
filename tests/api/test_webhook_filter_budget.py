"""A webhook filter runs on every delivery in the ingress's event loop, so the api refuses
(400, never 500) expressions that could amplify a body: functions that build strings or
lists from whole values, oversized syntax trees, and nesting that would exhaust the
parser's stack. Filters people actually write are still accepted."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import ApiClient, login

pytestmark = pytest.mark.integration

RUNNER = {"name": "python", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
TASK = {"name": "hello-kriten", "runner": "python", "command": "true"}
# The reported attack: 262 characters, 1.3 s and 270 MB per delivery on a 100-byte body.
AMPLIFIER = " | ".join(["to_string([@,@])"] * 14)


async def setup(api: ApiClient) -> dict[str, str]:
    headers = await login(api)
    assert (await api.post("/api/v1/runners", json=RUNNER, headers=headers)).status == 200
    assert (await api.post("/api/v1/tasks", json=TASK, headers=headers)).status == 200
    return headers


async def create(api: ApiClient, headers: dict[str, str], **fields: Any) -> Any:
    return await api.post(
        "/api/v1/webhooks", json={"task": "hello-kriten", **fields}, headers=headers
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (AMPLIFIER, "uses to_string(), which filters may not call"),
        ("join(',', [event, event])", "uses join()"),
        ("map(&to_string(@), [@, @])", "uses map()"),
        ("length(merge(@, @)) > `0`", "uses merge()"),
        ("sort_by(data, &name)", "uses sort_by()"),
        ("to_array(@)", "uses to_array()"),
        (" || ".join(f"a{i} == `{i}`" for i in range(40)), "is too complex: more than 100"),
        ("(" * 1000 + "event" + ")" * 1000, "filter is not a valid JMESPath expression"),
        ("[?a == b]" * 200, "filter is too complex"),
    ],
    ids=[
        "to_string-chain",
        "join",
        "map",
        "merge",
        "sort_by",
        "to_array",
        "too-many-terms",
        "deep-parentheses",
        "parser-recursion",
    ],
)
async def test_amplifying_filters_are_400_at_create_and_update(
    api: ApiClient, expression: str, message: str
) -> None:
    headers = await setup(api)
    response = await create(api, headers, filter=expression)
    assert response.status == 400, await response.text()
    assert message in (await response.json())["error"]
    created = await create(api, headers)
    assert created.status == 200
    hook = await created.json()
    response = await api.patch(
        f"/api/v1/webhooks/{hook['id']}", json={"filter": expression}, headers=headers
    )
    assert response.status == 400, await response.text()
    assert message in (await response.json())["error"]


@pytest.mark.parametrize(
    "expression",
    [
        "object_type == 'dcim.device' && snapshots.postchange.status == 'active'",
        "contains(data.fields, 'description')",
        "ref == 'refs/heads/main'",
        "length(commits[?starts_with(message, 'deploy')]) > `0`",
        "contains(['created', 'updated'], event) && !not_null(data.deleted)",
    ],
)
async def test_ordinary_filters_are_accepted(api: ApiClient, expression: str) -> None:
    headers = await setup(api)
    response = await create(api, headers, filter=expression)
    assert response.status == 200, await response.text()
    assert (await response.json())["filter"] == expression
