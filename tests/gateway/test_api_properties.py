"""Property tests over the API's own OpenAPI schema: no body, header or path makes it fail.

For every write route, hypothesis draws bodies from the route's published request schema (valid
shapes with arbitrary values), from the schema with one field swapped for any JSON value, and
from arbitrary JSON or bytes; each is sent with the write token, the read token, a wrong token
and none.  Whatever is drawn: never a 5xx, and a request that is not accepted (202) changes
nothing in the journal.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api import create_app
from gateway.daemon import Gateway
from tests.gateway.conftest import API_CHANNEL, model_gateway

TOKEN = "property-test-write-token-0123456789abcdef"
READ_TOKEN = "property-test-read-token-0123456789abcdefg"
HEADERS = {
    "write": {"Authorization": f"Bearer {TOKEN}"},
    "read": {"Authorization": f"Bearer {READ_TOKEN}"},
    "wrong": {"Authorization": "Bearer not-the-token-0123456789abcdefghijkl"},
    "none": {},
}
#: Requests per write route: with and without a token, valid and hostile bodies.
EXAMPLES = 60

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, TestClient, dict[str, Any]]]:
    tmp_path: Path = tmp_path_factory.mktemp("api-properties")
    gateway = model_gateway(
        tmp_path, API_CHANNEL, {"id": "bed2", "pump": "modbus+tcp://127.0.0.1:2"}
    )
    asyncio.run(gateway.tick())
    with TestClient(create_app(gateway, TOKEN, read_token=READ_TOKEN)) as client:
        schema = client.get("/openapi.json", headers=HEADERS["read"]).json()
        yield gateway, client, schema
    asyncio.run(gateway.shutdown("test over"))


def _write_routes(schema: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, component name) of every route with a request body, from the served schema."""
    routes = []
    for path, operations in schema["paths"].items():
        body = operations.get("post", {}).get("requestBody")
        if body is not None:
            ref = body["content"]["application/json"]["schema"]["$ref"]
            routes.append((path, ref.rsplit("/", 1)[-1]))
    return routes


WRITE_ROUTES = [
    "/v1/channels/{channel_id}/order",
    "/v1/channels/{channel_id}/titers",
    "/v1/channels/{channel_id}/weight",
    "/v1/channels/{channel_id}/vasopressors-withdrawn",
    "/v1/channels/{channel_id}/ack",
    "/v1/channels/{channel_id}/stop",
]


def test_every_write_route_publishes_its_body(
    rig: tuple[Gateway, TestClient, dict[str, Any]],
) -> None:
    _, _, schema = rig
    assert sorted(path for path, _ in _write_routes(schema)) == sorted(WRITE_ROUTES)


def from_schema(node: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the shape a (JSON Schema) node of the served OpenAPI document describes:
    objects with their properties (each optional one present or not), the declared types and
    enums, and ISO date-times.  Values are arbitrary within the type: the ranges are what the
    gateway checks, so the draws must cross them."""
    if "$ref" in node:
        return from_schema(components[node["$ref"].rsplit("/", 1)[-1]], components)
    if "anyOf" in node:
        return st.one_of([from_schema(option, components) for option in node["anyOf"]])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties", {})
        required = set(node.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, components) for k, v in properties.items() if k in required},
            optional={
                k: from_schema(v, components) for k, v in properties.items() if k not in required
            },
        )
    if kind == "string" and node.get("format") == "date-time":
        return st.datetimes(timezones=st.sampled_from([UTC, None])).map(lambda d: d.isoformat())
    return {
        "string": st.text(max_size=node.get("maxLength", 40) + 5),
        "number": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-1000, 1000),
        "integer": st.integers(-10, 1000),
        "boolean": st.booleans(),
        "null": st.none(),
    }.get(kind, JSON_VALUES)


def _bodies(schema: dict[str, Any], component: str) -> st.SearchStrategy[bytes]:
    components = schema["components"]["schemas"]
    shaped = from_schema(components[component], components)

    def swap_one(body: Any, value: Any, key_index: int) -> Any:
        if not isinstance(body, dict) or not body:
            return body
        key = sorted(body)[key_index % len(body)]
        return {**body, key: value}

    swapped = st.builds(swap_one, shaped, JSON_VALUES, st.integers(0, 20))
    as_json = (shaped | swapped | JSON_VALUES).map(lambda v: json.dumps(v).encode())
    hostile = st.sampled_from(
        [b'{"weight_kg": NaN}', b'{"a": 1, "a": 2}', b"\xff", b"[" * 500, b"{" * 3]
    ) | st.binary(max_size=64)
    return as_json | hostile


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route", WRITE_ROUTES)
def test_no_request_is_a_5xx_and_a_refused_one_changes_nothing(
    rig: tuple[Gateway, TestClient, dict[str, Any]], route: str
) -> None:
    gateway, client, schema = rig
    component = dict(_write_routes(schema))[route]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        body=_bodies(schema, component),
        who=st.sampled_from(sorted(HEADERS)),
        channel=st.sampled_from(["bed1", "bed2", "bed9", "BED1"]),
    )
    def check(body: bytes, who: str, channel: str) -> None:
        before = {ch: len(list(gateway.journal.events(ch))) for ch in ("bed1", "bed2")}
        response = client.post(
            route.replace("{channel_id}", channel),
            content=body,
            headers={**HEADERS[who], "Content-Type": "application/json"},
        )
        assert response.status_code < 500, (response.status_code, response.text)
        assert isinstance(
            response.json()["detail" if response.status_code >= 400 else "accepted"], str | list
        )
        if response.status_code != 202:
            after = {ch: len(list(gateway.journal.events(ch))) for ch in ("bed1", "bed2")}
            assert after == before, (response.status_code, response.text)
        else:
            assert who == "write"

    check()


@pytest.mark.timeout(60)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    path=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#"),
        min_size=1,
        max_size=40,
    ).map(lambda p: "/" + p.lstrip("/")),
    who=st.sampled_from(sorted(HEADERS)),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
)
def test_any_path_and_method_is_answered_without_a_5xx(
    rig: tuple[Gateway, TestClient, dict[str, Any]], path: str, who: str, method: str
) -> None:
    _, client, _ = rig
    response = client.request(method, path, headers=HEADERS[who])
    assert response.status_code < 500 or path in ("/readyz",), (path, response.status_code)
