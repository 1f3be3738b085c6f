"""Every walkthrough notebook, run headless once, and the telemetry each must produce.

One module-scoped run of ``o11ylab run notebooks/ --out DIR`` (papermill, real kernels, the
local endpoint, no API key) feeds every assertion; the telemetry is read back from the run's
OTLP-JSON trace files, as a user would see it, and from an OTLP receiver the run exports to
(every process: the runner, the kernels, the local endpoint), as a backend would see it. Each notebook in ``notebooks/``
needs a checker registered with ``@checks(...)``; a notebook without one fails loudly.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

from o11ylab import semconv
from o11ylab.otlpjson import read_logs, read_spans

from .conftest import NOTEBOOKS
from .otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(1800)]

NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
Span = dict[str, Any]


# --- the committed notebooks -------------------------------------------------------------------


def parameters_of(path: Path) -> dict[str, Any]:
    """The defaults in a notebook's ``parameters`` cell (literal assignments only)."""
    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    values: dict[str, Any] = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_committed_notebook_is_clean_and_parameterised(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or execution counts"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    assert code[0] is tagged[0], f"{path.name}: the parameters cell should come first"
    assert parameters_of(path), f"{path.name}: the parameters cell sets nothing"
    sources = "\n".join(c.source for c in code)
    assert "%load_ext o11ylab" in sources
    assert "%%traced" in sources, f"{path.name} has no traced cell"


# --- one headless run of them all ----------------------------------------------------------------


@dataclass
class Run:
    out: Path
    stdout: str
    stderr: str
    returncode: int
    wall_s: float
    summary: dict[str, Any]
    spans: list[Span]
    received: list[Span]  # what the OTLP receiver got, in tests/otlp_receiver.py's form
    by_id: dict[str, Span] = field(init=False)
    children: dict[str | None, list[Span]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {s["span_id"]: s for s in self.spans}
        self.children = defaultdict(list)
        for span in sorted(self.spans, key=lambda s: s["start_ns"]):
            self.children[span["parent_span_id"]].append(span)

    @property
    def trace_id(self) -> str:
        return str(self.summary["trace_id"])

    def of(self, notebook: str) -> list[Span]:
        """Spans written by the processes of one notebook (its kernel and what it started)."""
        return [
            s
            for s in self.spans
            if str(s["resource"].get(semconv.NOTEBOOK_PATH, "")).endswith(f"{notebook}.ipynb")
        ]

    def cells(self, notebook: str) -> dict[str, Span]:
        cells = [s for s in self.of(notebook) if semconv.CELL_SOURCE_SHA256 in s["attributes"]]
        return {s["name"]: s for s in cells}

    def cell(self, notebook: str, name: str) -> Span:
        cells = self.cells(notebook)
        assert name in cells, f"{notebook}: no cell span {name!r} (found {sorted(cells)})"
        return cells[name]

    def under(self, span: Span, operation: str | None = None) -> list[Span]:
        kids = self.children.get(span["span_id"], [])
        if operation is None:
            return kids
        return [k for k in kids if k["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == operation]

    def descendants(self, span: Span) -> list[Span]:
        found, frontier = [], [span]
        while frontier:
            kids = self.children.get(frontier.pop()["span_id"], [])
            found.extend(kids)
            frontier.extend(kids)
        return found

    def executed(self, notebook: str) -> nbformat.NotebookNode:
        return nbformat.read(self.out / f"{notebook}.ipynb", as_version=4)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("notebooks-run")
    env = dict(os.environ)
    env.pop("O11YLAB_RUN_DIR", None)  # the runner sets it to --out for every kernel
    env.pop("MPLBACKEND", None)  # kernels draw inline, as they do for a user
    env.pop("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", None)  # the default: off
    env["O11YLAB_PROMETHEUS_PORT"] = "0"
    for name in list(env):
        if name.startswith("OTEL_EXPORTER_OTLP_"):
            env.pop(name)  # the receiver below is the one backend
    with OtlpReceiver() as receiver:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver.port}"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "o11ylab", "run", str(NOTEBOOKS), "--out", str(out)],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=1700,
        )
        wall_s = time.perf_counter() - started
        # Every process has exited, and each flushed its exporter on the way out.
        with receiver._lock:
            received = list(receiver.spans)
    summary_file = out / "summary.json"
    assert summary_file.exists(), done.stdout + done.stderr
    result = Run(
        out,
        done.stdout,
        done.stderr,
        done.returncode,
        wall_s,
        json.loads(summary_file.read_text()),
        read_spans(out),
        received,
    )
    print(f"\no11ylab run notebooks/: {wall_s:.1f} s wall time")
    for notebook in result.summary["notebooks"]:
        print(
            f"  {Path(notebook['notebook']).name:28} {notebook['status']:7} "
            f"{notebook['duration_s']:6.1f} s"
        )
    return result


def test_every_notebook_runs_headless_in_one_go(run: Run) -> None:
    assert run.returncode == 0, run.stdout
    statuses = {Path(n["notebook"]).name: n["status"] for n in run.summary["notebooks"]}
    assert statuses == {p.name: "ok" for p in NOTEBOOK_PATHS}, run.stdout
    assert f"{len(NOTEBOOK_PATHS)}/{len(NOTEBOOK_PATHS)} notebooks ok" in run.stdout


# What o11ylab says as information (a model loaded, the endpoint starting, where telemetry
# goes, why there is no GPU): stdout, never a red stderr block in the notebook.
INFORMATION = re.compile(
    r"^o11ylab[\w ]*: .*(loaded in|starting the local model endpoint|telemetry to|"
    r"endpoint at|[Nn]o GPU|ready in)|^o11ylab: \[\d+/\d+ ",  # the last: model preparation
    re.MULTILINE,
)


def test_the_run_prints_no_kernel_transport_warning(run: Run) -> None:
    """Issue 12: the run's kernels talk to it over IPC, so ipykernel has no TCP warning to
    print (it did, once per notebook, on the runner's stderr)."""
    assert "without encryption" not in run.stderr + run.stdout, run.stderr[-2000:]


def test_no_notebook_shows_information_as_an_error_block(run: Run) -> None:
    """Issue 12: JupyterLab shows stderr as a red block; only real warnings may go there."""
    blocks: dict[str, list[str]] = {}
    for path in NOTEBOOK_PATHS:
        for cell in run.executed(path.stem).cells:
            for output in cell.get("outputs", ()):
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    blocks.setdefault(path.stem, []).append(output["text"])
    for notebook, texts in blocks.items():  # what is left there: real warnings
        print(f"\n{notebook} stderr: " + " | ".join(t[:160] for t in texts))
    information = {
        notebook: found
        for notebook, texts in blocks.items()
        if (found := [m.group(0) for text in texts for m in INFORMATION.finditer(text)])
    }
    assert information == {}, "information on stderr"
    # And where it belongs: %load_ext's one line is plain output.
    assert any(
        "o11ylab: telemetry to" in output.get("text", "")
        for cell in run.executed("00_quickstart").cells
        for output in cell.get("outputs", ())
        if output.get("name") == "stdout"
    ), "the %load_ext line is plain output"


def test_cells_of_every_notebook_join_the_runs_single_trace(run: Run) -> None:
    (root,) = [s for s in run.spans if s["name"] == semconv.RUN_SPAN]
    assert root["trace_id"] == run.trace_id and root["parent_span_id"] is None
    for path in NOTEBOOK_PATHS:
        (notebook,) = [s for s in run.spans if s["name"] == f"notebook {path.stem}"]
        assert notebook["parent_span_id"] == root["span_id"]
        cells = run.cells(path.stem)
        assert cells, f"{path.name} made no cell spans"
        for cell in cells.values():
            assert cell["trace_id"] == run.trace_id, f"{path.name}: {cell['name']} left the trace"
            assert cell["parent_span_id"] == notebook["span_id"]
        metadata = run.executed(path.stem).metadata[semconv.NOTEBOOK_METADATA_KEY]
        assert metadata == {"trace_id": run.trace_id, "status": "ok"}


def test_a_run_is_one_trace_in_the_backend(run: Run) -> None:
    """Issue 11: every span the run exports, the local endpoint's included, is in the run's
    trace, except 07's simulated users, each a trace of its own on purpose."""
    assert run.received, "the OTLP receiver got no spans"
    # The users' trace ids from the run files, which lose nothing: a remote queue may.
    users = {s["trace_id"] for s in run.spans if s["name"] == "load-test request"}
    assert users
    others = [s for s in run.received if s["trace_id"] not in users]
    traces: dict[str, list[Span]] = defaultdict(list)
    for span in others:
        traces[span["trace_id"]].append(span)
    print(
        f"\nOTLP: {len(run.received)} spans; {len(traces)} trace id(s) besides {len(users)} users'"
    )
    strays = {}
    for trace_id, spans in traces.items():
        ids = {s["span_id"] for s in spans}
        roots = [s for s in spans if s["parent_span_id"] not in ids]
        strays[trace_id] = sorted(f"{s['service']}: {s['name']}" for s in roots)
    assert list(traces) == [run.trace_id], f"the run's trace is {run.trace_id}; roots: {strays}"
    assert strays[run.trace_id] == [f"o11ylab: {semconv.RUN_SPAN}"]
    services = {s["service"] for s in others}
    assert semconv.SERVE_SERVICE_NAME in services, "the local endpoint exported nothing"


def test_notebooks_that_promise_a_plot_show_one(run: Run) -> None:
    for path in NOTEBOOK_PATHS:
        if "matplotlib" not in path.read_text(encoding="utf-8"):
            continue
        outputs = [
            o for c in run.executed(path.stem).cells if c.cell_type == "code" for o in c.outputs
        ]
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no plot"


# --- what each notebook must produce -------------------------------------------------------------

CHECKERS: dict[str, Callable[[Run], None]] = {}


def checks(notebook: str) -> Callable[[Callable[[Run], None]], Callable[[Run], None]]:
    def register(function: Callable[[Run], None]) -> Callable[[Run], None]:
        CHECKERS[notebook] = function
        return function

    return register


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_each_notebook_produces_its_telemetry(run: Run, path: Path) -> None:
    checker = CHECKERS.get(path.stem)
    if checker is None:
        pytest.fail(
            f"notebooks/{path.name} has no telemetry assertions: register a checker with "
            f"@checks({path.stem!r}) in {Path(__file__).name}"
        )
    checker(run)


def test_no_checker_is_left_without_its_notebook() -> None:
    stale = set(CHECKERS) - {p.stem for p in NOTEBOOK_PATHS}
    assert not stale, f"checkers for notebooks that no longer exist: {sorted(stale)}"


CLIENT, SERVER, INTERNAL = 3, 2, 1  # OTLP span kinds as the trace files spell them
OPENAI_SCOPE = "opentelemetry.instrumentation.genai.openai"
LANGCHAIN_SCOPE = "opentelemetry.instrumentation.genai.langchain"


def assert_tokens_and_cost(span: Span, *, output: bool = True) -> None:
    a = span["attributes"]
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] > 0, span["name"]
    if output:
        assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] > 0, span["name"]
    # Models o11ylab serves itself cost 0 USD: a known price, not an unknown one.
    assert semconv.COST_UNKNOWN not in a, f"{span['name']}: cost unknown for a local model"
    assert a[semconv.GEN_AI_USAGE_COST] == 0.0 and a[semconv.GEN_AI_USAGE_COST_CURRENCY] == "USD"
    assert a[semconv.GEN_AI_USAGE_COST_SOURCE] == semconv.COST_SOURCE_LOCAL, span["name"]


def names(spans: list[Span]) -> list[str]:
    return [s["name"] for s in spans]


@checks("00_quickstart")
def check_quickstart(run: Run) -> None:
    prepare = run.cell("00_quickstart", "prepare-data")
    assert [s["name"] for s in run.under(prepare)] == ["compute squares"]
    assert [s["name"] for s in run.under(run.cell("00_quickstart", "summarise"))] == ["sum", "mean"]
    logs = [r for r in read_logs(run.out) if "squares for quickstart" in str(r["body"])]
    assert logs and logs[0]["span_id"] == prepare["span_id"], "the log line carries its cell's span"


@checks("01_chat")
def check_chat(run: Run) -> None:
    params = parameters_of(NOTEBOOKS / "01_chat.ipynb")
    model, max_tokens = params["model"], params["max_tokens"]
    # The plain SDK's calls: one CLIENT span each, from the official OpenAI instrumentation.
    expected = {"first-chat": 1, "streaming": 1, "three-questions": 3, "content-capture-on": 1}
    for cell_name, count in expected.items():
        chats = run.under(run.cell("01_chat", cell_name), "chat")
        assert len(chats) == count, f"{cell_name}: {len(chats)} chat spans"
        for span in chats:
            assert span["name"] == f"chat {model}" and span["kind"] == CLIENT
            assert span["scope"] == OPENAI_SCOPE, span["scope"]
            assert_tokens_and_cost(span)
            assert span["attributes"][semconv.GEN_AI_USAGE_OUTPUT_TOKENS] <= max_tokens
    (streamed,) = run.under(run.cell("01_chat", "streaming"), "chat")
    assert streamed["attributes"]["gen_ai.request.stream"] is True
    assert streamed["attributes"][semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    cell = run.cell("01_chat", "three-questions")["attributes"]
    chats = run.under(run.cell("01_chat", "three-questions"), "chat")
    assert cell[semconv.CELL_INPUT_TOKENS] == sum(
        s["attributes"][semconv.GEN_AI_USAGE_INPUT_TOKENS] for s in chats
    )
    assert cell[semconv.CELL_OUTPUT_TOKENS] == sum(
        s["attributes"][semconv.GEN_AI_USAGE_OUTPUT_TOKENS] for s in chats
    )
    assert cell[semconv.CELL_COST] == 0.0
    # LangChain: one chat span from the LangChain instrumentation under the cell; util-genai
    # suppresses the SDK's span for the same request, so no OpenAI-scope span sits below it.
    langchain = run.cell("01_chat", "langchain")
    (lc,) = run.under(langchain)
    assert lc["name"] == f"chat {model}" and lc["scope"] == LANGCHAIN_SCOPE, (
        lc["name"],
        lc["scope"],
    )
    assert lc["attributes"][semconv.GEN_AI_OPERATION_NAME] == "chat"
    assert_tokens_and_cost(lc)
    assert lc["attributes"][semconv.GEN_AI_USAGE_OUTPUT_TOKENS] <= max_tokens
    assert not [s for s in run.descendants(langchain) if s["scope"] == OPENAI_SCOPE]
    assert (
        langchain["attributes"][semconv.CELL_OUTPUT_TOKENS]
        == lc["attributes"][semconv.GEN_AI_USAGE_OUTPUT_TOKENS]
    )
    # Content capture: only the call made with SPAN_ONLY, in its own process, carries the prompt.
    capture_cell = run.cell("01_chat", "content-capture-on")
    (captured,) = run.under(capture_cell, "chat")
    assert captured["resource"]["process.pid"] != capture_cell["resource"]["process.pid"]
    assert "what is a trace?" in captured["attributes"][semconv.GEN_AI_INPUT_MESSAGES]
    assert semconv.GEN_AI_OUTPUT_MESSAGES in captured["attributes"]
    with_content = [
        s
        for s in run.spans
        if semconv.GEN_AI_INPUT_MESSAGES in s["attributes"]
        or semconv.CELL_SOURCE in s["attributes"]
    ]
    assert with_content == [captured], "content is recorded only where it was switched on"


@checks("02_embeddings")
def check_embeddings(run: Run) -> None:
    params = parameters_of(NOTEBOOKS / "02_embeddings.ipynb")
    model, batch_size = params["model"], params["batch_size"]
    (one,) = run.under(run.cell("02_embeddings", "embed-sentences"), "embeddings")
    assert one["name"] == f"embeddings {model}" and one["kind"] == CLIENT
    assert one["scope"] == OPENAI_SCOPE
    assert one["attributes"][semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 384
    assert_tokens_and_cost(one, output=False)
    batches = run.under(run.cell("02_embeddings", "embed-in-batches"), "embeddings")
    assert len(batches) == math.ceil(8 / batch_size)  # the notebook embeds eight sentences
    for span in batches:
        assert span["name"] == f"embeddings {model}"
        assert_tokens_and_cost(span, output=False)
    assert (
        sum(s["attributes"][semconv.GEN_AI_USAGE_INPUT_TOKENS] for s in batches)
        == one["attributes"][semconv.GEN_AI_USAGE_INPUT_TOKENS]
    )
    # sentence-transformers in the kernel: an INTERNAL span from o11ylab's instrumentation.
    (local,) = run.under(run.cell("02_embeddings", "encode-in-kernel"))
    a = local["attributes"]
    assert local["name"].startswith("embeddings ") and local["kind"] == INTERNAL
    assert a[semconv.GEN_AI_OPERATION_NAME] == "embeddings"
    assert a[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_LOCAL
    assert a[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 384
    assert_tokens_and_cost(local, output=False)


@checks("03_vector_search")
def check_vector_search(run: Run) -> None:
    params = parameters_of(NOTEBOOKS / "03_vector_search.ipynb")
    collection, top_k, model = params["collection"], params["top_k"], params["embedding_model"]
    (add,) = run.under(run.cell("03_vector_search", "index"))
    assert add["name"] == f"add {collection}" and add["kind"] == CLIENT
    assert add["attributes"][semconv.VECTORSTORE_RECORD_COUNT] == 32  # the bundled notes
    (embedding,) = run.under(add)
    assert embedding["name"] == f"embeddings {model}" and embedding["scope"] == OPENAI_SCOPE
    assert_tokens_and_cost(embedding, output=False)
    for cell_name in ("search", "search-filtered"):
        (retrieval,) = run.under(run.cell("03_vector_search", cell_name))
        a = retrieval["attributes"]
        assert retrieval["name"] == f"retrieval {collection}"
        assert a[semconv.GEN_AI_OPERATION_NAME] == "retrieval"
        assert a[semconv.GEN_AI_DATA_SOURCE_ID] == collection
        assert a[semconv.GEN_AI_RETRIEVAL_TOP_K] == top_k
        assert a[semconv.DB_RESPONSE_RETURNED_ROWS] == top_k
        assert a[semconv.GEN_AI_REQUEST_MODEL] == model
        assert semconv.GEN_AI_RETRIEVAL_QUERY_TEXT not in a, "content capture is off"
        (embedding,) = run.under(retrieval)
        assert embedding["name"] == f"embeddings {model}"
        assert_tokens_and_cost(embedding, output=False)
    kinds = run.under(run.cell("03_vector_search", "latency"))
    by_kind: dict[str, int] = defaultdict(int)
    for kind in kinds:
        (retrieval,) = run.under(kind, "retrieval")
        assert retrieval["attributes"][semconv.DB_RESPONSE_RETURNED_ROWS] == top_k
        embeds = run.under(retrieval, "embeddings")
        assert len(embeds) == (0 if kind["name"] == "by vector" else 1), kind["name"]
        by_kind[kind["name"]] += 1
    per_kind = params["latency_queries"]
    assert by_kind == {"by text": per_kind, "by vector": per_kind, "by text, filtered": per_kind}


@checks("04_gpu_inference")
def check_gpu_inference(run: Run) -> None:
    params = parameters_of(NOTEBOOKS / "04_gpu_inference.ipynb")
    pipeline_calls = run.under(run.cell("04_gpu_inference", "generate"))
    assert len(pipeline_calls) == params["generations"], names(pipeline_calls)
    (direct,) = run.under(run.cell("04_gpu_inference", "generate-direct"))
    assert direct["name"] == "text_completion SmolLM2-135M-Instruct"
    for span in [*pipeline_calls, direct]:
        a = span["attributes"]
        if span is not direct:  # the pipeline was given chat messages
            assert span["name"] == "chat SmolLM2-135M-Instruct", span["name"]
        assert span["kind"] == INTERNAL and not run.under(span), "generate adds no span of its own"
        assert a[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_LOCAL
        assert 0 < a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] <= params["max_new_tokens"]
        assert a[semconv.LOCAL_OUTPUT_TOKENS_PER_SECOND] > 0
        assert a[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
        assert semconv.PROCESS_CPU_SECONDS_SPAN in a
        assert_tokens_and_cost(span)


RAG_STAGES = ["embeddings", "retrieval", "rag prompt", "chat"]


def check_rag_workflow(run: Run, workflow: Span, top_k: int) -> None:
    """o11ylab.ai.ask's workflow span (07 load test)."""
    a = workflow["attributes"]
    assert workflow["name"] == "invoke_workflow rag"
    assert a[semconv.GEN_AI_WORKFLOW_NAME] == semconv.RAG_WORKFLOW_NAME
    stages = run.under(workflow)
    names = [s["name"] if s["name"].startswith("rag ") else s["name"].split()[0] for s in stages]
    assert names == RAG_STAGES, f"stages in start order: {names}"
    embeddings, retrieval, prompt, chat = stages
    assert retrieval["attributes"][semconv.GEN_AI_RETRIEVAL_TOP_K] == top_k
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == (
        embeddings["attributes"][semconv.GEN_AI_USAGE_INPUT_TOKENS]
        + chat["attributes"][semconv.GEN_AI_USAGE_INPUT_TOKENS]
    )
    assert (
        a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]
        == chat["attributes"][semconv.GEN_AI_USAGE_OUTPUT_TOKENS]
    )
    assert a[semconv.GEN_AI_USAGE_COST] == 0.0
    assert a[semconv.RAG_SOURCE_IDS] == prompt["attributes"][semconv.RAG_SOURCE_IDS]
    assert 1 <= a[semconv.RAG_SOURCE_COUNT] <= top_k


def served(run: Run, client_span: Span, route: str, operation: str) -> Span:
    """The local endpoint's SERVER span for a client call, and its GenAI span inside it."""
    (server,) = run.under(client_span)
    assert server["name"] == f"POST {route}" and server["kind"] == SERVER, server["name"]
    assert server["resource"]["service.name"] == semconv.SERVE_SERVICE_NAME
    assert server["resource"]["process.pid"] != client_span["resource"]["process.pid"]
    (inside,) = run.under(server, operation)
    assert inside["attributes"][semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_LOCAL
    return inside


def check_plain_rag(run: Run, pipeline: Span, params: dict[str, Any]) -> None:
    """One `rag answer` span of 05: retrieval (with its embedding) then chat, down to the
    endpoint's generation, in the run's one trace."""
    assert pipeline["name"] == "rag answer"
    retrieval, chat = run.under(pipeline)
    assert retrieval["name"] == f"retrieval {params['collection']}"
    assert retrieval["attributes"][semconv.GEN_AI_RETRIEVAL_TOP_K] == params["top_k"]
    assert retrieval["attributes"][semconv.DB_RESPONSE_RETURNED_ROWS] == params["top_k"]
    assert len(pipeline["attributes"]["rag.source_ids"]) == params["top_k"]
    (embedding,) = run.under(retrieval)
    assert embedding["name"] == f"embeddings {params['embedding_model']}"
    assert embedding["scope"] == OPENAI_SCOPE
    assert_tokens_and_cost(embedding, output=False)
    assert chat["name"] == f"chat {params['chat_model']}" and chat["scope"] == OPENAI_SCOPE
    assert_tokens_and_cost(chat)
    assert chat["attributes"][semconv.GEN_AI_USAGE_OUTPUT_TOKENS] <= params["max_tokens"]
    served(run, embedding, "/v1/embeddings", "embeddings")
    generation = served(run, chat, "/v1/chat/completions", "chat")
    assert (
        generation["attributes"][semconv.GEN_AI_USAGE_OUTPUT_TOKENS]
        == chat["attributes"][semconv.GEN_AI_USAGE_OUTPUT_TOKENS]
    )
    assert_tokens_and_cost(generation)
    whole = [pipeline, *run.descendants(pipeline)]
    assert {s["trace_id"] for s in whole} == {run.trace_id}, "one trace, across processes"


@checks("05_rag_pipeline")
def check_rag_pipeline(run: Run) -> None:
    params = parameters_of(NOTEBOOKS / "05_rag_pipeline.ipynb")
    (add,) = run.under(run.cell("05_rag_pipeline", "index-documents"))
    assert add["name"] == f"add {params['collection']}"
    assert [s["name"] for s in run.under(add)] == [f"embeddings {params['embedding_model']}"]
    (one,) = run.under(run.cell("05_rag_pipeline", "ask-one"))
    check_plain_rag(run, one, params)
    every = run.under(run.cell("05_rag_pipeline", "ask-all"))
    assert len(every) == len(params["questions"])
    for pipeline in every:
        check_plain_rag(run, pipeline, params)
    # The notebook printed the cross-process tree, with the endpoint's spans in it.
    text = "".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
        for c in run.executed("05_rag_pipeline").cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "POST /v1/chat/completions" in text and "o11ylab-serve" in text
    assert "o11ylab.ai" not in (NOTEBOOKS / "05_rag_pipeline.ipynb").read_text(encoding="utf-8")


@checks("06_failure_modes")
def check_failure_modes(run: Run) -> None:
    # cell -> (the cell span's error.type, the failed operation span's error.type)
    expected = {
        "bad-key": ("AuthenticationFailed", "openai.AuthenticationError"),
        "unknown-model": ("ModelNotFound", "openai.NotFoundError"),
        "timeout": ("EndpointTimeout", "openai.APITimeoutError"),
        "endpoint-down": ("EndpointUnreachable", "openai.APIConnectionError"),
        "summarise-latencies": ("StatisticsError", None),
        # Chroma's own span says what Chroma raised; the cell says what o11ylab told the user.
        "dimension-mismatch": ("DimensionMismatchError", "InvalidArgumentError"),
    }
    for cell_name, (cell_error, operation_error) in expected.items():
        cell = run.cell("06_failure_modes", cell_name)
        assert cell["status"] == "ERROR"
        assert cell["attributes"][semconv.ERROR_TYPE] == cell_error
        assert any(e["name"] == "exception" for e in cell["events"])
        failed = [s for s in run.under(cell) if s["status"] == "ERROR"]
        if operation_error is None:
            assert not failed
            continue
        (span,) = failed
        assert span["attributes"][semconv.ERROR_TYPE] == operation_error

    def failed_under(name: str) -> Span:
        return next(
            s for s in run.under(run.cell("06_failure_modes", name)) if s["status"] == "ERROR"
        )

    assert failed_under("bad-key")["attributes"][semconv.HTTP_RESPONSE_STATUS_CODE] == 401
    assert failed_under("unknown-model")["attributes"][semconv.HTTP_RESPONSE_STATUS_CODE] == 404
    down = failed_under("endpoint-down")
    assert down["attributes"][semconv.HTTP_REQUEST_RESEND_COUNT] == 2
    assert [e["name"] for e in down["events"]].count(semconv.RETRY_EVENT) == 2
    assert failed_under("dimension-mismatch")["name"].startswith("retrieval ")
    # The notebook's own key check passed, and no key-shaped secret reached any span.
    last = [c for c in run.executed("06_failure_modes").cells if c.cell_type == "code"][-1]
    assert "wrong key in any span: False" in "".join(o.get("text", "") for o in last.outputs)
    assert not re.search(r"sk-wrong-[0-9a-f]{4}", json.dumps(run.spans, default=str))


@checks("07_load_test")
def check_load_test(run: Run) -> None:
    params = parameters_of(NOTEBOOKS / "07_load_test.ipynb")
    requests = params["users"] * params["requests_per_user"]
    roots = [s for s in run.of("07_load_test") if s["name"] == "load-test request"]
    assert len(roots) == requests
    assert all(r["parent_span_id"] is None for r in roots), "each request starts a new trace"
    traces = {r["trace_id"] for r in roots}
    assert len(traces) == requests and run.trace_id not in traces
    users = {
        (r["attributes"]["load_test.user"], r["attributes"]["load_test.request"]) for r in roots
    }
    assert len(users) == requests
    cell = run.cell("07_load_test", "load-test")
    assert cell["attributes"][semconv.CELL_SPAN_COUNT] == 0, "no request span nests under the cell"
    for root in roots:
        (workflow,) = run.under(root)
        check_rag_workflow(run, workflow, params["top_k"])
        in_trace = [s for s in run.spans if s["trace_id"] == root["trace_id"]]
        assert len(in_trace) == 1 + len(run.descendants(root)), "whole: all of it under its root"
        kernel_side = [
            s
            for s in in_trace
            if str(s["resource"].get(semconv.NOTEBOOK_PATH, "")).endswith("07_load_test.ipynb")
        ]
        assert len(kernel_side) == 6, "and nothing else: " + ", ".join(
            s["name"] for s in kernel_side
        )
        assert any(s["name"].startswith("POST /v1/") for s in in_trace), "the server joined it"
    executed = run.executed("07_load_test")
    text = "".join(
        o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "no spans lost" in text


# --- papermill and cells that fail on purpose ----------------------------------------------------


def write_notebook(path: Path, *cells: tuple[str, list[str]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})]
    nb.cells += [
        nbformat.v4.new_code_cell(source, metadata={"tags": tags}) for source, tags in cells
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def test_cells_tagged_raises_exception_fail_without_failing_the_run(
    tmp_path: Path,
    run_env: dict[str, str],
) -> None:
    expected = write_notebook(
        tmp_path / "expected.ipynb",
        ("%load_ext o11ylab", []),
        ("%%traced meant-to-fail\n1 / 0", ["raises-exception"]),
        ("print('ran on')", []),
    )
    unexpected = write_notebook(
        tmp_path / "unexpected.ipynb",
        ("%load_ext o11ylab", []),
        ("%%traced expected\n1 / 0", ["raises-exception"]),
        ("raise KeyError('not expected')", []),
        ("print('never')", []),
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "o11ylab", "run", str(expected), str(unexpected), "--out", str(out)],
        check=False,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    summary = {
        Path(n["notebook"]).name: n
        for n in json.loads((out / "summary.json").read_text())["notebooks"]
    }
    assert summary["expected.ipynb"]["status"] == "ok"
    assert summary["unexpected.ipynb"]["status"] == "failed"
    assert "KeyError" in summary["unexpected.ipynb"]["error"]
    ran = nbformat.read(out / "expected.ipynb", as_version=4)
    assert not any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in ran.cells)
    assert "ran on" in ran.cells[-1].outputs[0]["text"]
    (cell,) = [s for s in read_spans(out) if s["name"] == "meant-to-fail"]
    assert (
        cell["status"] == "ERROR" and cell["attributes"][semconv.ERROR_TYPE] == "ZeroDivisionError"
    )
