"""o11ylab's AI helpers are a library: they use the providers they are given (or the global
API) and never install providers or write files behind the user's back."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from o11ylab import models

from .conftest import PYTHON, ROOT

pytestmark = pytest.mark.timeout(180)

BARE = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import o11ylab
    from o11ylab.ai.client import Endpoint, get_client
    from o11ylab.ai.local_model import LocalModel
    from o11ylab.ai.vectorstore import VectorStore

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    providers = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}

    store = VectorStore("bare", path=sys.argv[1], embedder=None, **providers)
    store.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
    hits = store.search(embedding=[1.0, 0.1], top_k=1)
    model = LocalModel(sys.argv[2], device="cpu", verbose=False, **providers)
    model.generate("Spans and", max_new_tokens=2)
    get_client(Endpoint("custom", "http://127.0.0.1:9/v1"))  # instruments the SDK, sends nothing
    data = reader.get_metrics_data()
    print(json.dumps({
        "hit": hits[0].id,
        "spans": sorted(s.name for s in exporter.get_finished_spans()),
        "metrics": sorted(
            m.name
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        ),
        "tracer_provider": type(trace.get_tracer_provider()).__name__,
        "meter_provider": type(metrics.get_meter_provider()).__name__,
    }))
    """
)


def test_helpers_in_a_bare_process_use_the_providers_passed_and_install_none(
    tmp_path: Path,
) -> None:
    tiny = models.build_tiny_model(tmp_path / "tiny")
    home, runs, chroma = tmp_path / "home", tmp_path / "runs", tmp_path / "chroma"
    home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("O11YLAB_", "OTEL_", "OPENAI_", "CHROMA_"))
    }
    env.update(HOME=str(home), O11YLAB_RUNS_DIR=str(runs), PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [PYTHON, "-c", BARE, str(chroma), str(tiny)],
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["hit"] == "a"
    # The spans went to the providers the caller passed...
    assert "add bare" in seen["spans"] and "retrieval bare" in seen["spans"]
    assert "text_completion tiny" in seen["spans"]
    assert "gen_ai.client.operation.duration" in seen["metrics"]
    # ...and the process's global providers are still the API's defaults.
    assert seen["tracer_provider"] == "ProxyTracerProvider"
    assert seen["meter_provider"] == "_ProxyMeterProvider"
    # No trace file, no run folder: nothing written under HOME or O11YLAB_RUNS_DIR.
    assert not runs.exists()
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
