"""Secrets and content never leak: a full headless run with sentinel credentials, every artifact scanned.

The run uses every notebook, a real OTLP receiver standing where the collector stands (with
sentinel OTLP headers, which must reach it and nothing else), and an OpenAI-compatible
endpoint reached with a sentinel API key. Afterwards every file in the run folder, the
executed notebooks, the runner's output, the endpoint's log and every byte the collector
received are searched for the sentinels. With content capture off, no prompt, question or
document text may appear in any telemetry; a second, small run with capture on shows that
the same text then does appear, so the first check can fail.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

from o11ylab.otlpjson import read_logs, read_spans

from .conftest import NOTEBOOKS
from .otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.notebook, pytest.mark.integration, pytest.mark.timeout(2400)]

# Shaped like the real thing, but not matching any real provider's token pattern.
SENTINEL_KEY = "sk-o11ylab-SENTINEL-KEY-7f3a9c"
SENTINEL_TOKEN = "SENTINEL-OTLP-TOKEN-5d2e81"
SENTINEL_ORG = "SENTINEL-ORG-4471"
SENTINELS = (SENTINEL_KEY, SENTINEL_TOKEN, SENTINEL_ORG)
# The notebook that demonstrates capture by calling a child process with SPAN_ONLY on purpose.
OPTED_IN_CELL = "content-capture-on"


@dataclass
class SentinelRun:
    out: Path
    output: str
    returncode: int
    collector: OtlpReceiver
    endpoint_files: list[Path]


@pytest.fixture(scope="module")
def sentinel_run(tmp_path_factory: pytest.TempPathFactory) -> SentinelRun:
    from o11ylab.serve import LocalEndpoint

    out = tmp_path_factory.mktemp("sentinel-run")
    env = dict(os.environ)
    env.pop("O11YLAB_RUN_DIR", None)
    env.pop("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", None)
    with OtlpReceiver() as collector:
        env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
                "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{SENTINEL_TOKEN},x-scope-orgid={SENTINEL_ORG}",
                "O11YLAB_PROMETHEUS_PORT": "0",
            }
        )
        serve_dir = out / "serve-telemetry"
        serve_env = dict(env, O11YLAB_RUN_DIR=str(serve_dir))
        with LocalEndpoint(env=serve_env) as endpoint:
            run_env = dict(env, OPENAI_BASE_URL=endpoint.base_url, OPENAI_API_KEY=SENTINEL_KEY)
            done = subprocess.run(
                [sys.executable, "-m", "o11ylab", "run", str(NOTEBOOKS), "--out", str(out / "run")],
                env=run_env,
                capture_output=True,
                text=True,
                timeout=2000,
                check=False,
            )
            endpoint_log = endpoint.log_path.read_bytes() if endpoint.log_path else b""
        (out / "serve.log").write_bytes(endpoint_log)
    return SentinelRun(
        out / "run",
        done.stdout + done.stderr,
        done.returncode,
        collector,
        [out / "serve.log", *sorted(serve_dir.rglob("*"))],
    )


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_the_sentinel_run_completed_and_the_headers_reached_the_collector(
    sentinel_run: SentinelRun,
) -> None:
    assert sentinel_run.returncode == 0, sentinel_run.output[-4000:]
    received = [
        h.get("authorization") or h.get("Authorization") for h in sentinel_run.collector.headers
    ]
    assert f"Bearer {SENTINEL_TOKEN}" in received, "the sentinel headers were in use"
    assert sentinel_run.collector.spans, "the collector received the run's spans"


def test_no_secret_in_any_artifact(sentinel_run: SentinelRun) -> None:
    places: dict[str, bytes] = {"runner output": sentinel_run.output.encode()}
    for path in [*_files(sentinel_run.out), *sentinel_run.endpoint_files]:
        if path.is_file():
            places[str(path)] = path.read_bytes()
    for index, (path, body) in enumerate(sentinel_run.collector.bodies):
        places[f"collector request {index} {path}"] = body
    assert any(p.endswith(".ipynb") for p in places), "the executed notebooks were scanned"
    assert any("traces." in p for p in places) and any("logs." in p for p in places)
    leaks = [
        (where, secret)
        for where, data in places.items()
        for secret in SENTINELS
        if secret.encode() in data
    ]
    assert not leaks, leaks
    print(
        f"\nscanned {len(places)} artifacts "
        f"({sum(len(d) for d in places.values()) / 2**20:.1f} MiB) for {len(SENTINELS)} secrets"
    )


# --- content ------------------------------------------------------------------------------------


def content_strings() -> list[str]:
    """Prompts, questions and document text the notebooks send to models and stores."""
    from o11ylab.ai.pipeline import load_documents

    texts = {doc.text[:60] for doc in load_documents()}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            source = "\n".join(
                line
                for line in cell.source.splitlines()
                if not line.lstrip().startswith(("%", "!"))
            )
            try:
                tree = ast.parse(source)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                value = getattr(node, "value", None)
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(value, str)
                    and value[:1].isupper()
                    and value.rstrip()[-1:] in "?."
                    and len(value.split()) >= 4
                ):
                    texts.add(value)
    return sorted(texts)


def _outside_opted_in_cell(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        children.setdefault(span["parent_span_id"], []).append(span)
    excluded: set[str] = set()
    frontier = [s["span_id"] for s in spans if s["name"] == OPTED_IN_CELL]
    while frontier:
        span_id = frontier.pop()
        excluded.add(span_id)
        frontier.extend(c["span_id"] for c in children.get(span_id, []))
    return [s for s in spans if s["span_id"] not in excluded]


def _leaked(texts: list[str], haystacks: dict[str, str]) -> list[tuple[str, str]]:
    return [(where, text[:40]) for where, hay in haystacks.items() for text in texts if text in hay]


def test_with_capture_off_no_content_reaches_telemetry(sentinel_run: SentinelRun) -> None:
    texts = content_strings()
    assert len(texts) > 40, "prompts, questions and documents to look for"
    spans = read_spans(sentinel_run.out)
    assert any(s["name"] == OPTED_IN_CELL for s in spans), "01_chat's opt-in demo ran"
    haystacks = {
        f"span {s['name']}": repr(s["attributes"]) + repr(s["events"])
        for s in _outside_opted_in_cell(spans)
    }
    haystacks.update({f"log {i}": repr(r) for i, r in enumerate(read_logs(sentinel_run.out))})
    for path in sentinel_run.out.glob("metrics.*.jsonl"):
        haystacks[str(path)] = path.read_text()
    collected = _outside_opted_in_cell(sentinel_run.collector.spans)
    haystacks.update({f"collector span {s['name']}": repr(s["attributes"]) for s in collected})
    haystacks.update(
        {
            f"collector {p} {i}": b.decode("utf-8", "replace")
            for i, (p, b) in enumerate(sentinel_run.collector.bodies)
            if not p.endswith("/v1/traces")
        }
    )
    assert not _leaked(texts, haystacks)


def test_with_capture_on_the_same_content_is_recorded(
    tmp_path: Path, run_env: dict[str, str]
) -> None:
    notebook = NOTEBOOKS / "05_rag_pipeline.ipynb"
    env = dict(run_env, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="SPAN_ONLY")
    env.pop("O11YLAB_RUN_DIR")
    done = subprocess.run(
        [sys.executable, "-m", "o11ylab", "run", str(notebook), "--out", str(tmp_path / "on")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    attributes = " ".join(repr(s["attributes"]) for s in read_spans(tmp_path / "on"))
    found = [text for text in content_strings() if text in attributes]
    questions = [t for t in found if t.endswith("?")]
    documents = [t for t in found if not t.endswith(("?", "."))]
    assert questions, "the questions are on the spans"
    assert documents, "the retrieved document text is on the spans"
