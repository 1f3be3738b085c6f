"""The user's own AI code, traced without changes: the instrumentor loader and the openai default.

Each test runs in a fresh interpreter (``python -c``), because what is under test is the order of
imports: which libraries ``%load_ext o11ylab`` imports (none), what happens to a library imported
before or after it, and what ``%unload_ext`` leaves behind. The chat tests go through the real
openai SDK, LangChain and Chroma over real HTTP to the session's local endpoint (a tiny model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from o11ylab import semconv

from .ai_support import LocalServer, local_server_fixture, server_spans  # noqa: F401

SHELL = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
def out(**values):
    print("RESULT " + json.dumps(values, default=str), flush=True)
"""


def run_python(
    code: str, env: dict[str, str], cell: str = "", timeout: float = 240
) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter with an IPython shell ``ip``; ``CELL`` is ``cell``."""
    script = SHELL + f"CELL = {textwrap.dedent(cell).strip()!r}\n" + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    results = [
        line[len("RESULT ") :] for line in done.stdout.splitlines() if line.startswith("RESULT ")
    ]
    assert done.returncode == 0 and results, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return {"stderr": done.stderr, "stdout": done.stdout, **json.loads(results[-1])}


@pytest.fixture
def env(run_env: dict[str, str]) -> dict[str, str]:
    run_env.pop("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", None)
    run_env["O11YLAB_HARDWARE"] = "0"
    return run_env


def test_load_ext_imports_no_ai_library_and_instruments_each_on_its_import(
    env: dict[str, str],
) -> None:
    result = run_python(
        """
        ip.run_line_magic("load_ext", "o11ylab")
        heavy = ("openai", "chromadb", "transformers", "torch", "langchain_core",
                 "sentence_transformers")
        imported = [m for m in heavy if m in sys.modules]
        from o11ylab import instrumentation
        before = {r["name"]: r["state"] for r in instrumentation.status()}
        import openai
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
        out(imported=imported, before=before,
            after={r["name"]: r["state"] for r in instrumentation.status()},
            openai=OpenAIInstrumentor().is_instrumented_by_opentelemetry)
    """,
        env,
    )
    assert result["imported"] == [], "%load_ext o11ylab must not import AI libraries"
    for name in ("openai", "openai_http", "chromadb", "transformers", "langchain"):
        assert result["before"][name] == "waiting", result["before"]
    assert result["after"]["openai"] == "instrumented"
    assert result["after"]["openai_http"] == "instrumented"
    assert result["after"]["chromadb"] == "waiting", "importing openai wakes only openai's"
    assert result["openai"] is True


def test_importing_the_official_instrumentor_before_openai_still_instruments_openai(
    env: dict[str, str],
) -> None:
    """A notebook that imports OpenAIInstrumentor (the official docs' first line) before
    openai: openai's import fires from inside that half-imported module, whose class does not
    exist yet. It used to fail for the session ("partially initialized module"), so every
    call stayed untraced; now it is instrumented as soon as that import has finished."""
    result = run_python(
        """
        import time
        ip.run_line_magic("load_ext", "o11ylab")
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
        from o11ylab import instrumentation
        deadline = time.monotonic() + 30
        while not OpenAIInstrumentor().is_instrumented_by_opentelemetry:
            assert time.monotonic() < deadline, instrumentation.status()
            time.sleep(0.01)
        out(states={r["name"]: [r["state"], r["reason"]] for r in instrumentation.status()})
    """,
        env,
    )
    assert result["states"]["openai"] == ["instrumented", ""], result["states"]
    assert "could not instrument" not in result["stderr"] + result["stdout"]


def test_a_library_imported_before_load_ext_is_instrumented_at_once(env: dict[str, str]) -> None:
    result = run_python(
        """
        import chromadb
        from o11ylab.instrumentation.chromadb import ChromaInstrumentor
        assert not ChromaInstrumentor().is_instrumented_by_opentelemetry
        ip.run_line_magic("load_ext", "o11ylab")
        out(chroma=ChromaInstrumentor().is_instrumented_by_opentelemetry)
    """,
        env,
    )
    assert result["chroma"] is True


def test_disabled_instrumentations_stay_off_and_status_says_so(env: dict[str, str]) -> None:
    env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "openai, chromadb"
    result = run_python(
        """
        ip.run_line_magic("load_ext", "o11ylab")
        import openai, chromadb
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
        from o11ylab.instrumentation.chromadb import ChromaInstrumentor
        status = repr(ip.run_line_magic("o11y", "status"))
        out(openai=OpenAIInstrumentor().is_instrumented_by_opentelemetry,
            chroma=ChromaInstrumentor().is_instrumented_by_opentelemetry, status=status)
    """,
        env,
    )
    assert result["openai"] is False and result["chroma"] is False
    assert "traced: openai" in result["status"] and "disabled" in result["status"]
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS" in result["status"]


def test_status_lists_library_version_and_instrumentor(env: dict[str, str]) -> None:
    from importlib.metadata import version

    result = run_python(
        """
        ip.run_line_magic("load_ext", "o11ylab")
        import openai
        out(status=repr(ip.run_line_magic("o11y", "status")))
    """,
        env,
    )
    line = next(x for x in result["status"].splitlines() if x.startswith("traced: openai "))
    assert f"openai {version('openai')}" in line
    assert (
        f"opentelemetry-instrumentation-genai-openai {version('opentelemetry-instrumentation-genai-openai')}"
        in line
    )
    assert "instrumented" in line


def test_unload_removes_every_patch_it_made(env: dict[str, str]) -> None:
    result = run_python(
        """
        import openai, chromadb, transformers
        from chromadb.api.models.Collection import Collection
        from openai._base_client import SyncAPIClient
        from transformers.generation.utils import GenerationMixin
        originals = [Collection.query, SyncAPIClient._send_request, GenerationMixin.generate,
                     openai.resources.chat.completions.Completions.create]
        ip.run_line_magic("load_ext", "o11ylab")
        patched = [Collection.query, SyncAPIClient._send_request, GenerationMixin.generate,
                   openai.resources.chat.completions.Completions.create]
        ip.run_line_magic("unload_ext", "o11ylab")
        after = [Collection.query, SyncAPIClient._send_request, GenerationMixin.generate,
                 openai.resources.chat.completions.Completions.create]
        out(patched=[a is not b for a, b in zip(originals, patched)],
            restored=[a is b for a, b in zip(originals, after)])
    """,
        env,
    )
    assert result["patched"] == [True, True, True, True]
    assert result["restored"] == [True, True, True, True]


def test_unload_leaves_what_the_user_instrumented_alone(env: dict[str, str]) -> None:
    result = run_python(
        """
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
        OpenAIInstrumentor().instrument()   # the user's own, before o11ylab
        ip.run_line_magic("load_ext", "o11ylab")
        import openai
        from o11ylab import instrumentation
        state = {r["name"]: r["state"] for r in instrumentation.status()}["openai"]
        ip.run_line_magic("unload_ext", "o11ylab")
        out(state=state, still=OpenAIInstrumentor().is_instrumented_by_opentelemetry)
    """,
        env,
    )
    assert result["state"] == "yours"
    assert result["still"] is True


# --- a plain openai client, LangChain and Chroma, offline --------------------------------------


@pytest.fixture
def offline_env(env: dict[str, str], local_server: LocalServer) -> dict[str, str]:
    """No OPENAI_* set: the extension's default points the SDK at the local endpoint."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "O11YLAB_CHAT_MODEL"):
        env.pop(name, None)
    env["O11YLAB_LOCAL_OPENAI"] = "1"
    env["O11YLAB_LOCAL_ENDPOINT"] = local_server.base_url  # the session's, not a new one
    env["O11YLAB_SERVE_API_KEY"] = local_server.api_key
    return env


def test_plain_openai_client_reaches_the_local_endpoint_and_joins_the_trace(
    offline_env: dict[str, str], local_server: LocalServer, tmp_path: Path
) -> None:
    result = run_python(
        """
        import os
        ip.run_line_magic("load_ext", "o11ylab")
        base = os.environ["OPENAI_BASE_URL"]
        ip.run_cell(CELL)
        import o11ylab
        spans = o11ylab.recent_spans()
        ip.run_line_magic("unload_ext", "o11ylab")
        out(base=base, spans=spans, after=os.environ.get("OPENAI_BASE_URL"),
            usage=ip.user_ns["reply"].usage.completion_tokens)
    """,
        offline_env,
        cell=f"""
        %%traced ask
        import openai
        client = openai.OpenAI()
        reply = client.chat.completions.create(model="{local_server.chat_model}",
            messages=[{{"role": "user", "content": "hi"}}], max_tokens=4)
    """,
    )
    assert result["base"].startswith("http://127.0.0.1:")
    assert result["after"] is None, "unload puts the environment back"
    spans = {s["name"]: s for s in result["spans"]}
    cell, chat = spans["ask"], spans[f"chat {local_server.chat_model}"]
    assert chat["parent_span_id"] == cell["span_id"]
    attributes = chat["attributes"]
    assert attributes["gen_ai.usage.output_tokens"] == result["usage"] > 0
    assert attributes["gen_ai.usage.cost.amount"] == 0
    assert attributes["gen_ai.usage.cost.source"] == "local"
    assert attributes["http.response.status_code"] == 200
    assert local_server.api_key not in json.dumps(result["spans"])
    # The server's spans join the caller's trace: the relay passed traceparent through.
    served = server_spans(
        Path(os.environ["O11YLAB_RUN_DIR"]),
        local_server.pid,
        lambda found: any(x["trace_id"] == chat["trace_id"] for x in found),
    )
    assert any(s["trace_id"] == chat["trace_id"] for s in served), "server spans in the trace"


def test_langchain_nests_over_the_openai_call_offline(
    offline_env: dict[str, str], local_server: LocalServer
) -> None:
    result = run_python(
        """
        ip.run_line_magic("load_ext", "o11ylab")
        ip.run_cell(CELL)
        import o11ylab
        from o11ylab import instrumentation
        out(spans=o11ylab.recent_spans(),
            state={r["name"]: r["state"] for r in instrumentation.status()})
    """,
        offline_env,
        cell=f"""
        %%traced chain
        from langchain_openai import ChatOpenAI
        llm = ChatOpenAI(model="{local_server.chat_model}", max_tokens=4)
        answer = llm.invoke("Name one signal.")
    """,
    )
    assert result["state"]["langchain"] == "instrumented"
    spans = result["spans"]
    cell = next(s for s in spans if s["name"] == "chain")
    genai = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "chat"]
    assert genai, [s["name"] for s in spans]
    ids = {s["span_id"]: s for s in spans}

    def under_cell(span: dict[str, Any]) -> bool:
        while span["parent_span_id"] is not None:
            if span["parent_span_id"] == cell["span_id"]:
                return True
            span = ids.get(span["parent_span_id"], {"parent_span_id": None})
        return False

    assert all(under_cell(s) for s in genai)
    scopes = {s["scope"] for s in spans if s["name"] != "chain"}
    assert any("langchain" in scope for scope in scopes), scopes
    assert any(s["attributes"].get("gen_ai.usage.output_tokens") for s in genai)
    # Counted once in the cell, whichever of the two instrumentations carries the usage.
    used = [
        s
        for s in genai
        if s["attributes"].get("gen_ai.usage.output_tokens")
        and not s["attributes"].get("o11ylab.usage.counted_below")
    ]
    assert cell["attributes"][semconv.CELL_OUTPUT_TOKENS] == sum(
        s["attributes"]["gen_ai.usage.output_tokens"] for s in used
    )


def test_chroma_openai_embedding_function_nests_under_retrieval(
    offline_env: dict[str, str], local_server: LocalServer, tmp_path: Path
) -> None:
    result = run_python(
        """
        ip.run_line_magic("load_ext", "o11ylab")
        ip.run_cell(CELL)
        import o11ylab
        out(spans=o11ylab.recent_spans(), hits=ip.user_ns["hits"]["ids"])
    """,
        offline_env,
        cell=f"""
        %%traced search
        import os, chromadb
        from chromadb.utils.embedding_functions import OpenAIEmbeddingFunction
        embed = OpenAIEmbeddingFunction(api_key=os.environ["OPENAI_API_KEY"],
            api_base=os.environ["OPENAI_BASE_URL"], model_name="{local_server.embedding_model}")
        client = chromadb.PersistentClient(path=r"{tmp_path / "chroma"}")
        docs = client.get_or_create_collection("docs", embedding_function=embed)
        docs.add(ids=["a", "b", "c"], documents=["spans nest", "metrics count", "logs tell"])
        hits = docs.query(query_texts=["what nests?"], n_results=2)
    """,
    )
    assert result["hits"][0][0] == "a"
    spans = result["spans"]
    by_id = {s["span_id"]: s for s in spans}
    retrieval = next(s for s in spans if s["name"] == "retrieval docs")
    assert retrieval["attributes"]["gen_ai.retrieval.top_k"] == 2
    embeddings = [s for s in spans if s["name"].startswith("embeddings ")]
    assert any(s["parent_span_id"] == retrieval["span_id"] for s in embeddings)
    add = next(s for s in spans if s["name"] == "add docs")
    assert any(s["parent_span_id"] == add["span_id"] for s in embeddings)
    cell = next(s for s in spans if s["name"] == "search")
    assert by_id[retrieval["parent_span_id"]]["span_id"] == cell["span_id"]
    assert "what nests?" not in json.dumps(spans), "no query text without content capture"


def test_relay_says_why_when_the_local_endpoint_cannot_start(env: dict[str, str]) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "O11YLAB_LOCAL_ENDPOINT"):
        env.pop(name, None)
    env["O11YLAB_LOCAL_OPENAI"] = "1"
    env["LOCAL_MODEL_NAME"] = str(Path(os.sep) / "nonexistent" / "model-folder")
    result = run_python(
        """
        ip.run_line_magic("load_ext", "o11ylab")
        import openai
        try:
            openai.OpenAI().chat.completions.create(
                model="x", messages=[{"role": "user", "content": "hi"}])
        except openai.APIStatusError as exc:
            out(status=exc.status_code, message=str(exc))
    """,
        env,
    )
    assert result["status"] == 503
    assert "could not start its local model endpoint" in result["message"]
    assert "OPENAI_BASE_URL" in result["message"]


def test_opentelemetry_instrument_traces_chroma_and_transformers_outside_jupyter(
    env: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(f"""
        import chromadb
        from o11ylab.models import build_tiny_model
        client = chromadb.EphemeralClient()
        docs = client.get_or_create_collection("plain-docs")
        docs.add(ids=["1", "2"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
        docs.query(query_embeddings=[[1.0, 0.1]], n_results=1)
        from transformers import AutoModelForCausalLM, AutoTokenizer
        folder = build_tiny_model(r"{tmp_path / "tiny"}")
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        inputs = tokenizer("hello", return_tensors="pt")
        model.generate(**inputs, max_new_tokens=3, do_sample=False)
    """)
    )
    env.update(
        {
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "plain-script",
        }
    )
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    done = subprocess.run(
        [str(instrument), sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = [json.loads(chunk)["name"] for chunk in _json_objects(done.stdout)]
    assert "retrieval plain-docs" in names, names
    assert "add plain-docs" in names, names
    assert any(n.startswith("text_completion ") for n in names), names


def _json_objects(text: str) -> list[str]:
    """The console exporter's pretty-printed spans, one JSON object each."""
    objects, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                objects.append(text[start : i + 1])
    return [o for o in objects if '"name"' in o and '"context"' in o]


def test_a_helper_that_imports_the_library_patches_it_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    # VectorStore switches the Chroma instrumentor on, which imports chromadb, which fires the
    # loader's own hook for chromadb: one patch, one span per query, and unload removes it.
    result = run_python(
        f"""
        ip.run_line_magic("load_ext", "o11ylab")
        from o11ylab.ai.vectorstore import VectorStore
        store = VectorStore("once-docs", path=r"{tmp_path / "chroma"}", embedder=None)
        store.add(["a"], ids=["1"], embeddings=[[1.0, 0.0]])
        from o11ylab.testing import capture_spans
        with capture_spans() as spans:
            store.search(embedding=[1.0, 0.0], top_k=1)
        from chromadb.api.models.Collection import Collection
        ip.run_line_magic("unload_ext", "o11ylab")
        out(names=[s.name for s in spans],
            unpatched=not hasattr(Collection.query, "__wrapped__"))
    """,
        env,
    )
    assert result["names"] == ["retrieval once-docs"]
    assert result["unpatched"] is True
