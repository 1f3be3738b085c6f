"""The local endpoint's own OpenAPI schema, fuzzed with schemathesis over real HTTP.

The app is the one ``o11ylab serve`` runs (``create_app``, here over the tiny test model),
served by uvicorn on a loopback port in a thread. schemathesis reads the app's OpenAPI schema
(``app.openapi()``: the endpoint does not publish it) and sends valid and invalid requests to
every route. What must hold for each one:

- no 5xx, and an answer within ``CALL_LIMIT_S`` (the client gives up there: a hang fails);
- a 200 whose content type and body the schema documents matches it;
- every refusal is the OpenAI-style JSON error the module promises (``{"error": {...}}``),
  so the openai SDK turns it into its own exception with the server's message.

Validation errors are 400s in OpenAI's format, not FastAPI's 422, so the schema's 422 entries
are not checked (``status_code_conformance`` is left out on purpose). Generations are kept to a
few tokens so the whole file runs in about a minute.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
)
from schemathesis.generation.modes import GenerationMode

from o11ylab import models, serve

from .ai_support import uvicorn_in_thread

pytestmark = pytest.mark.timeout(300)

SERVED = {"/v1/chat/completions": "tiny", "/v1/embeddings": models.DEFAULT_EMBEDDING_MODEL}
CALL_LIMIT_S = 20.0
MAX_NEW_TOKENS = 4
EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def served_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    tiny = models.build_tiny_model(tmp_path_factory.mktemp("schema-models") / "tiny")
    app = serve.create_app(
        serve.ServeConfig(model=str(tiny)), after_load=lambda: LOADS.append("loaded")
    )
    with uvicorn_in_thread(app, "schema-fuzz-server") as base_url:
        yield app, base_url


# One entry per after_load call: o11ylab serve freezes the heap there, after the embedder loads.
LOADS: list[Any] = []


@pytest.fixture(scope="module")
def base_url(served_app: tuple[Any, str]) -> str:
    return served_app[1]


@pytest.fixture(scope="module")
def api_schema(served_app: tuple[Any, str]) -> Any:
    app, _ = served_app
    fastapi_app = app.app  # create_app wraps FastAPI in its telemetry middleware
    return schemathesis.openapi.from_dict(fastapi_app.openapi())


# Every route users call; test_the_schema_lists_exactly_these_routes keeps this list honest.
ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
    ("GET", "/health"),
    ("GET", "/metrics"),
]


def keep_generation_short(body: Any) -> None:
    """Valid token limits above a few tokens come down to a few; invalid ones stay invalid."""
    if not isinstance(body, dict):
        return
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value > MAX_NEW_TOKENS
        ):  # JSON's integers include 7.0
            body[key] = MAX_NEW_TOKENS
    if "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = MAX_NEW_TOKENS


def name_the_served_model(body: dict[str, Any], served: str, text: str) -> None:
    """Make a generated body one the model answers, leaving every other field as generated."""
    if isinstance(body.get("model"), str):
        body["model"] = served
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        roles = itertools.cycle(("system", "assistant", "user"))
        for message in messages:
            if isinstance(message, dict):
                message["role"] = next(roles)
        if isinstance(messages[-1], dict):
            messages[-1].update(role="user", content=text)


def assert_openai_style_error(response: Any) -> None:
    content_type = response.headers.get("content-type", [""])[0]  # schemathesis: name -> values
    assert content_type.startswith("application/json"), (
        response.status_code,
        content_type,
        response.text[:300],
    )
    error = response.json().get("error")
    assert isinstance(error, dict), response.text[:300]
    assert isinstance(error.get("message"), str) and error["message"].strip(), error
    assert isinstance(error.get("type"), str) and error["type"], error
    assert "Traceback" not in error["message"], error


def check_one_call(case: Any, base_url: str, clamp: bool = True) -> Any:
    if clamp and case.path == "/v1/chat/completions":
        keep_generation_short(case.body)
    started = time.monotonic()
    response = case.call(base_url=base_url, timeout=CALL_LIMIT_S)
    elapsed = time.monotonic() - started
    assert elapsed < CALL_LIMIT_S, f"{case.method} {case.path} took {elapsed:.1f} s"
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            response_schema_conformance,
            content_type_conformance,
            response_headers_conformance,
        ],
    )
    if 400 <= response.status_code < 500:
        assert_openai_style_error(response)
    if response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        events = [
            line.removeprefix("data: ")
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        failed = [event for event in events if "error" in json.loads(event)]
        assert not failed, f"the stream started, then failed: {failed}"
    return response


# Valid requests to every route; invalid ones where there is something to get wrong (a JSON
# body: any string is a valid model id in a path).
CASES = [(method, path, GenerationMode.POSITIVE) for method, path in ROUTES] + [
    ("POST", "/v1/chat/completions", GenerationMode.NEGATIVE),
    ("POST", "/v1/embeddings", GenerationMode.NEGATIVE),
]


# schemathesis' own pytest plugin (schema.parametrize) does not run under pytest 9, so each
# route and generation mode is one test driving the operation's hypothesis strategy directly.
@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES]
)
def test_every_route_answers_by_its_schema_without_5xx_or_hanging(
    api_schema: Any, base_url: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    served = SERVED.get(path)

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        use_served_model=st.booleans(),
        text=st.text(min_size=1, max_size=40).filter(str.strip),
    )
    def calls(case: Any, use_served_model: bool, text: str) -> None:
        # A random model name only ever meets the 404, random messages a 400; half the cases
        # name the served model and end on a user's question, so generation, streaming and
        # embedding run with every other field as generated.
        if served and use_served_model and isinstance(case.body, dict):
            name_the_served_model(case.body, served, text)
        check_one_call(case, base_url)

    calls()


# Requests a client really sends, which random generation rarely hits whole, with the answer
# each must get: the path, the body (the served model is added), the status and error code.
HAND_PICKED: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, 200, None),
    (
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 4,
        },
        200,
        None,
    ),
    (
        "/v1/chat/completions",
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "<script>x</script>"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "again"},
            ],
            "temperature": 2,
            "top_p": 1e-9,
            "seed": -1,
            "stop": ["a", ""],
            "n": 1,
            "max_completion_tokens": 1,
            "unknown_field": [1],
        },
        200,
        None,
    ),
    (
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_tokens": 4,
        },
        200,
        None,
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "tool", "content": "42"}], "stop": "x", "max_tokens": 4},
        200,
        None,
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "é🙂\u0000" * 400}]},
        400,
        "context_length_exceeded",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 10_000},
        400,
        "context_length_exceeded",
    ),
    # Found by the fuzzing above: a temperature near 0 made NaN probabilities (500), a seed
    # beyond 64 bits overflowed torch's (500).
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 1e-300, "max_tokens": 4},
        200,
        None,
    ),
    (
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 5e-324,
            "max_tokens": 4,
            "stream": True,
        },
        200,
        None,
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "seed": 2**70, "max_tokens": 4},
        400,
        "invalid_value",
    ),
    (
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "seed": -(2**63),
            "max_tokens": 4,
            "stream": True,
        },
        200,
        None,
    ),
    ("/v1/embeddings", {"input": ["one", "two", "é🙂"], "encoding_format": "base64"}, 200, None),
    ("/v1/embeddings", {"input": "x" * 20_000, "dimensions": 384}, 200, None),
    ("/v1/embeddings", {"input": ["", "not empty"]}, 400, "invalid_value"),
    ("/v1/embeddings", {"input": [[1, 2, 3]]}, 400, "invalid_value"),
    ("/v1/embeddings", {"input": "hi", "encoding_format": "int8"}, 400, "invalid_value"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    HAND_PICKED,
    ids=[f"{p} {i}" for i, (p, *_) in enumerate(HAND_PICKED)],
)
def test_hand_picked_requests_get_the_answer_a_client_expects(
    api_schema: Any, base_url: str, path: str, body: dict[str, Any], status: int, code: str | None
) -> None:
    operation = api_schema[path]["POST"]
    case = operation.Case(body={"model": SERVED[path], **body}, media_type="application/json")
    response = check_one_call(case, base_url, clamp=False)
    assert response.status_code == status, response.text[:300]
    if code is not None:
        assert response.json()["error"]["code"] == code, response.text[:300]


def test_after_load_runs_once_the_embedder_has_loaded(base_url: str) -> None:
    import requests

    for _ in range(2):
        answer = requests.post(
            f"{base_url}/v1/embeddings",
            json={"model": models.DEFAULT_EMBEDDING_MODEL, "input": "a span"},
            timeout=CALL_LIMIT_S,
        )
        assert answer.status_code == 200, answer.text
    assert LOADS == ["loaded"]


def test_the_schema_lists_exactly_these_routes(api_schema: Any) -> None:
    """The fuzzing above reaches every route the app has, and the module docstring names."""
    operations = {
        (op.method.upper(), op.path)
        for op in (result.ok() for result in api_schema.get_all_operations())
    }
    assert operations == set(ROUTES)


def test_a_stream_is_answered_as_the_schema_says(base_url: str, api_schema: Any) -> None:
    """Streaming is one boolean away from the plain answer: its content type is documented."""
    import requests

    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": MAX_NEW_TOKENS,
        "stream": True,
    }
    response = requests.post(f"{base_url}/v1/chat/completions", json=body, timeout=CALL_LIMIT_S)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.rstrip().endswith("data: [DONE]")
    operation = api_schema["/v1/chat/completions"]["POST"]
    documented = operation.definition.raw["responses"]["200"]["content"]
    assert "text/event-stream" in documented, documented
