"""``%unload_ext o11ylab`` undoes everything ``%load_ext`` installed, and loading again works.

In a fresh interpreter with a real IPython shell: what the process has before loading (threads,
listening ports, shell hooks, magics, logging, the openai variables, Chroma's methods) is
compared with what it has after unloading, with the extension having done real work in between
(a traced cell, /metrics served, the hardware sampler running, Chroma instrumented and queried).
"""

from __future__ import annotations

import textwrap

import pytest

from .conftest import free_port
from .test_instrumentation import run_python

# OpenTelemetry's global providers can be set once per process, so o11ylab's stay installed
# after unload (idle) and a later %load_ext reuses them: their export workers stay too, the
# run files' own (o11ylab-file-*, which never drop) among them.
SDK_WORKERS = {
    "OtelBatchSpanRecordProcessor",
    "OtelBatchLogRecordProcessor",
    "OtelPeriodicExportingMetricReader",
    "o11ylab-file-spans",
    "o11ylab-file-logs",
}

STATE = f"""
import logging, os, threading, time, psutil
SDK_WORKERS = {SDK_WORKERS!r}
def state():
    return {{
        "threads": sorted(t.name for t in threading.enumerate()
                          if t.is_alive() and t.name not in SDK_WORKERS),
        "ports": sorted(c.laddr.port for c in psutil.Process().net_connections("inet")
                        if c.status == psutil.CONN_LISTEN),
        "hooks": {{event: len(callbacks) for event, callbacks in ip.events.callbacks.items()}},
        "magics": sorted(name for kind in ("line", "cell") for name in ip.magics_manager.magics[kind]
                         if "o11y" in name or "traced" in name),
        "root_handlers": [type(h).__name__ for h in logging.getLogger().handlers],
        "root_level": logging.getLogger().level,
        "record_factory": repr(logging.getLogRecordFactory()),
        "openai_env": {{k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}},
        "query_patched": hasattr(Collection.query, "__wrapped__"),
    }}
def settled(before, timeout=15.0):
    deadline = time.monotonic() + timeout  # threads end and sockets close asynchronously
    while True:
        now = state()
        if now == before or time.monotonic() > deadline:
            return now
        time.sleep(0.05)
"""


@pytest.fixture
def env(run_env: dict[str, str]) -> dict[str, str]:
    run_env.pop("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", None)  # every instrumentor on
    return run_env


@pytest.mark.timeout(180)
def test_unload_leaves_nothing_behind_and_load_works_again(env: dict[str, str]) -> None:
    env["O11YLAB_HARDWARE"] = "1"  # the sampler thread (psutil; no GPU here)
    env["O11YLAB_PROMETHEUS_PORT"] = str(free_port())
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    env["O11YLAB_LOCAL_OPENAI"] = "1"  # the extension points the openai SDK at its relay
    result = run_python(
        STATE
        + textwrap.dedent(
            """
        ip.run_cell("import chromadb")  # the user's namespace: imported before loading
        from chromadb.api.models.Collection import Collection
        import o11ylab
        before = state()
        ip.run_line_magic("load_ext", "o11ylab")
        ip.run_cell("%%traced work\\n"
                    "c = chromadb.EphemeralClient().get_or_create_collection('unload', embedding_function=None)\\n"
                    "c.add(ids=['a'], embeddings=[[1.0, 0.0]])\\n"
                    "c.query(query_embeddings=[[1.0, 0.0]], n_results=1)")
        loaded = state()
        names = [s["name"] for s in o11ylab.recent_spans()]
        ip.run_line_magic("unload_ext", "o11ylab")
        after = settled(before)
        ip.run_line_magic("load_ext", "o11ylab")
        ip.run_cell("%%traced again\\nc.query(query_embeddings=[[0.0, 1.0]], n_results=1)")
        again = [s["name"] for s in o11ylab.recent_spans()]
        reloaded = state()
        ip.run_line_magic("unload_ext", "o11ylab")
        out(before=before, loaded=loaded, after=after, names=names, again=again,
            reloaded=reloaded, final=settled(before))
    """
        ),
        env,
    )
    before, loaded, after = result["before"], result["loaded"], result["after"]
    # It did install things, or comparing would prove nothing.
    assert loaded["ports"] and loaded["magics"] and loaded["query_patched"]
    assert len(loaded["threads"]) > len(before["threads"])
    assert loaded["openai_env"]["OPENAI_BASE_URL"], "the relay's URL while loaded"
    assert {"work", "retrieval unload"} <= set(result["names"])
    for key in before:
        assert after[key] == before[key], f"{key} after unload: {after[key]} (was {before[key]})"
    assert {"again", "retrieval unload"} <= set(result["again"]), "loading again traces again"
    assert result["reloaded"]["ports"] and result["reloaded"]["query_patched"]
    assert result["final"] == before
