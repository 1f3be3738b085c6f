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
    # Chat completions: spans, tokens, cost and content capture

    Every chat call in this notebook goes through the official OpenAI SDK, instrumented by the
    OpenTelemetry GenAI instrumentation. You will see:

    1. one **`chat {model}` span per call**, with the model, token usage, finish reason and cost;
    2. **streaming**: the span stays open until the last chunk and records the time to the first one;
    3. **roll-ups**: a `%%traced` cell adds up the tokens and cost of every call inside it;
    4. **content capture**: what changes on the span when prompts and answers may be recorded.

    Without `OPENAI_API_KEY` or `OPENAI_BASE_URL` the calls go to o11ylab's local
    OpenAI-compatible endpoint (`o11ylab serve`, SmolLM2-135M-Instruct on this machine), which
    costs nothing. The same code talks to OpenAI, vLLM or Ollama when you set those variables.
    Answers are kept short (`max_tokens`) so the notebook runs in a minute or two on a CPU.
    """),
    parameters("""
    model = ""                    # "" = the endpoint's default chat model
    max_tokens = 16               # tokens per answer (short: a CPU generates a few per second)
    compare_with = "gpt-4o-mini"  # a model from the price table, to price the same tokens
    """),
    md("""
    ## Load the extension and find the endpoint

    `resolve_endpoint()` picks the endpoint from the environment (and starts the local one when
    nothing is configured; the first start takes a few seconds). The endpoint is printed
    without its key: o11ylab never shows a key.
    """),
    code("""
    %load_ext o11ylab
    import pandas as pd

    import o11ylab
    from o11ylab import pricing, semconv
    from o11ylab.ai import chat
    from o11ylab.ai.client import default_model, resolve_endpoint

    endpoint = resolve_endpoint()
    model = model or default_model("chat")
    print(f"Chat calls go to the {endpoint}, model {model}.")
    """),
    md("""
    ## One call, one span

    `%%traced first-chat` makes the cell a span; the chat call inside it becomes a child span,
    `chat SmolLM2-135M-Instruct`. After the cell, the summary line shows the cell's duration, the
    spans inside it, the tokens and the cost.
    """),
    code("""
    %%traced first-chat
    reply = chat("In one sentence, what is a trace?", model, max_tokens=max_tokens, temperature=0)
    print(reply.text.strip())
    cost = "unknown (no price for this model)" if reply.cost_usd is None else f"${reply.cost_usd:.6f}"
    print(f"{reply.usage.input_tokens} input + {reply.usage.output_tokens} output tokens, "
          f"cost {cost}, finish reason {reply.finish_reason!r}")
    """),
    md("""
    Here is everything that span carries, read back from o11ylab's in-memory copy of the spans
    this kernel exported. The `gen_ai.*` names follow the OpenTelemetry GenAI semantic
    conventions; `server.*` says where the call went; the cost comes from o11ylab's bundled price
    table (models that o11ylab serves locally cost 0 USD; `o11ylab.cost.priced_as` names the
    price-table entry used). Note what is *not* there: neither the prompt nor the answer.
    """),
    code("""
    def chat_spans(cell_name=None):
        \"\"\"This kernel's chat spans, optionally only those under the cell span `cell_name`.\"\"\"
        records = o11ylab.recent_spans()
        by_id = {r["span_id"]: r for r in records}
        return [r for r in records
                if r["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == "chat"
                and (cell_name is None
                     or by_id.get(r["parent_span_id"], {}).get("name") == cell_name)]

    first_span = chat_spans("first-chat")[-1]
    pd.Series(first_span["attributes"], name=first_span["name"]).to_frame()
    """),
    md("""
    ## Streaming

    With `stream=True` the text arrives piece by piece. The span stays open until the stream is
    drained and records `gen_ai.response.time_to_first_chunk`, the latency a user actually
    feels in a chat UI.
    """),
    code("""
    %%traced streaming
    stream = chat("Count from one to five.", model, max_tokens=max_tokens, stream=True, temperature=0)
    for piece in stream:
        print(piece, end="", flush=True)
    print()
    result = stream.result
    print(f"first chunk after {result.time_to_first_chunk_s * 1000:.0f} ms, "
          f"{result.usage.output_tokens} output tokens")
    """),
    code("""
    streamed = chat_spans("streaming")[-1]["attributes"]
    print(f"on the span: stream={streamed.get('gen_ai.request.stream')}, time to first chunk "
          f"{streamed[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] * 1000:.0f} ms, "
          f"{streamed[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]} output tokens")
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
    replies = [chat(q, model, max_tokens=max_tokens, temperature=0) for q in questions]
    for question, answer in zip(questions, replies):
        print(f"{question} → {answer.text.strip()[:90]}")
    """),
    md("""
    The table prices the same token counts at the list price of `compare_with` from the bundled
    price table, to show what this cell would cost against a hosted model. Your own prices
    (or a price for local GPU time) go in a file named by `O11YLAB_PRICING_FILE`.
    """),
    code("""
    table = pricing.load_table()
    rows = []
    for record in chat_spans("three-questions"):
        a = record["attributes"]
        hosted = pricing.price_call(compare_with, None, a[semconv.GEN_AI_USAGE_INPUT_TOKENS],
                                    a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS])
        rows.append({
            "span": record["name"],
            "ms": round((record["end_ns"] - record["start_ns"]) / 1e6),
            "input tokens": a[semconv.GEN_AI_USAGE_INPUT_TOKENS],
            "output tokens": a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS],
            "cost $": a.get(semconv.GEN_AI_USAGE_COST),
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
    ## What content capture changes

    By default o11ylab records **no content**: no prompt, no answer, no document, no cell source.
    Telemetry often leaves the machine, and prompts may hold personal data. The standard variable
    `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` opts in: `SPAN_ONLY` puts the messages
    on the spans (`gen_ai.input.messages`, `gen_ai.output.messages`, and `jupyter.cell.source`
    on cell spans), `EVENT_ONLY` sends them as log events, `SPAN_AND_EVENT` does both.

    The instrumentation reads the variable once, when it starts, so it belongs in the kernel's
    environment before `%load_ext o11ylab` (or in `OTEL_*` settings of your Jupyter server).
    To compare both settings side by side, the next cell makes the same call in a fresh Python
    process with `SPAN_ONLY`. It passes this cell's span along as a W3C `traceparent`, so the
    other process's chat span joins this notebook's trace, under this cell, and it writes its
    spans into this kernel's run folder.
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
    from o11ylab.ai import chat
    from o11ylab.testing import capture_spans

    context.attach(propagate.extract({"traceparent": os.environ["TRACEPARENT"]}))
    with capture_spans() as spans:
        chat("In one sentence, what is a trace?", sys.argv[1], max_tokens=int(sys.argv[2]),
             temperature=0)
    span = [s for s in spans if s.name.startswith("chat ")][-1]
    print(json.dumps({k: v if isinstance(v, (str, int, float, bool)) else list(v)
                      for k, v in span.attributes.items()}))
    """

    carrier = {}
    inject(carrier)  # this cell's span as a traceparent header
    env = {**os.environ,
           "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
           "TRACEPARENT": carrier["traceparent"],
           "O11YLAB_RUN_DIR": str(telemetry.run_dir),
           "O11YLAB_PROMETHEUS_PORT": "0"}
    if endpoint.kind == "local":  # reuse this kernel's local endpoint instead of starting one
        env["O11YLAB_LOCAL_ENDPOINT"] = endpoint.base_url
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
    point the same way. This notebook embeds a few sentences through the instrumented OpenAI SDK
    and shows:

    1. one **`embeddings {model}` span per request**, with the input tokens, the vector size
       (`gen_ai.embeddings.dimension.count`) and the cost;
    2. a **similarity matrix** of the sentences as a plot;
    3. what **batching** does to the number of requests, and so to the spans and the latency.

    Locally the endpoint serves all-MiniLM-L6-v2 (384 dimensions, normalized vectors); with
    `OPENAI_API_KEY` set, the same code calls OpenAI's embedding models.
    """),
    parameters("""
    model = ""                               # "" = the endpoint's default embedding model
    batch_size = 3                           # texts per request in the batching comparison
    compare_with = "text-embedding-3-small"  # a priced model, to price the same tokens
    """),
    code("""
    %load_ext o11ylab
    import numpy as np
    import pandas as pd

    import o11ylab
    from o11ylab import pricing, semconv
    from o11ylab.ai import embed
    from o11ylab.ai.client import default_model, resolve_endpoint

    endpoint = resolve_endpoint()
    model = model or default_model("embeddings")
    print(f"Embeddings come from the {endpoint}, model {model}.")

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
    result = embed(sentences, model)
    vectors = np.array(result.vectors)
    cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.6f}"
    print(f"{len(result)} vectors of {result.dimensions} numbers from {result.model}; "
          f"{result.input_tokens} input tokens, cost {cost}")
    print("first vector starts", np.round(vectors[0][:5], 3), "and has length",
          round(float(np.linalg.norm(vectors[0])), 3))
    """),
    md("""
    The span, from the kernel's in-memory copy: the operation, the model, the tokens the server
    counted, the vector size, and the cost (0 USD for a model served locally). The texts
    themselves are not recorded.
    """),
    code("""
    def embedding_spans(cell_name):
        records = o11ylab.recent_spans()
        by_id = {r["span_id"]: r for r in records}
        return [r for r in records
                if r["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == "embeddings"
                and by_id.get(r["parent_span_id"], {}).get("name") == cell_name]

    span = embedding_spans("embed-sentences")[-1]
    keep = [semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_REQUEST_MODEL, semconv.GEN_AI_RESPONSE_MODEL,
            semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT,
            semconv.GEN_AI_USAGE_COST, semconv.COST_PRICED_AS, semconv.SERVER_ADDRESS]
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
    ax.set_title(f"{result.model}: cosine similarity of {len(sentences)} sentences")
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

    `embed(..., batch_size=N)` sends N texts per request. Each request is one span, so the trace
    shows how many round trips a job made and how long each took: the same eight sentences in
    batches of `batch_size` make several spans where one did before.
    """),
    code("""
    %%traced embed-in-batches
    batched = embed(sentences, model, batch_size=batch_size)
    print(f"{len(batched)} vectors in {len(batched.responses)} requests; same vectors as before: "
          f"{np.allclose(np.array(batched.vectors), vectors, atol=1e-4)}")
    """),
    code("""
    %o11y trace
    """),
    md("""
    ## The telemetry this notebook produced

    Every embeddings span of the notebook, per cell: how many requests each cell made, the tokens
    and the time they took, and what the same tokens would cost at the list price of
    `compare_with` (the local model costs nothing).
    """),
    code("""
    rows = []
    for cell_name in ("embed-sentences", "embed-in-batches"):
        spans = embedding_spans(cell_name)
        tokens = sum(s["attributes"][semconv.GEN_AI_USAGE_INPUT_TOKENS] for s in spans)
        hosted = pricing.price_call(compare_with, None, tokens)
        rows.append({
            "cell": cell_name,
            "requests (spans)": len(spans),
            "input tokens": tokens,
            "total ms": round(sum(s["end_ns"] - s["start_ns"] for s in spans) / 1e6, 1),
            "ms per request": round(sum(s["end_ns"] - s["start_ns"] for s in spans) / 1e6 / len(spans), 1),
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
    question. o11ylab wraps Chroma so every search is a GenAI **`retrieval {collection}` span**
    (the collection, `top_k`, the number of hits) and every write a database-style span. You
    will:

    1. index the bundled notes on observability (32 short documents) in a local Chroma folder;
    2. search them, with and without a metadata filter;
    3. measure the latency of many searches and plot its distribution, separating the time spent
       embedding the question from the time spent in the index.

    Chroma runs in the kernel (`PersistentClient`) on a folder; set `CHROMA_HOST` to use a Chroma
    server instead. The store embeds texts with all-MiniLM-L6-v2 in the kernel, so the embedding
    shows as an `embeddings` span under each write or text search.
    """),
    parameters("""
    chroma_path = ""              # "" = a new temporary folder, so runs never collide
    collection = "o11ylab-notes"  # the Chroma collection
    top_k = 3                     # hits per search
    latency_queries = 20          # searches of each kind in the latency measurement
    """),
    code("""
    %load_ext o11ylab
    import tempfile

    import pandas as pd

    import o11ylab
    from o11ylab import semconv
    from o11ylab.ai import load_documents
    from o11ylab.ai.vectorstore import VectorStore

    chroma_dir = chroma_path or tempfile.mkdtemp(prefix="o11ylab-chroma-")
    documents = load_documents()
    print(f"{len(documents)} documents; Chroma folder {chroma_dir}")
    pd.Series([d.topic for d in documents]).value_counts().rename("documents per topic").to_frame().T
    """),
    md("""
    ## Index

    `upsert` adds the documents, or replaces them when the cell runs again (the ids are stable).
    The cell's trace shows an `upsert` span with the embedding of the texts nested inside it.
    """),
    code("""
    %%traced index
    store = VectorStore(collection, path=chroma_dir)
    store.upsert([d.text for d in documents], ids=[d.id for d in documents],
                 metadatas=[{"title": d.title, "topic": d.topic} for d in documents])
    print(f"{store.count()} documents in {store!r}")
    """),
    code("""
    %o11y trace
    """),
    md("""
    ## Search

    A text search embeds the question, then asks the index for the `top_k` nearest documents.
    The score is the cosine similarity: higher is closer.
    """),
    code("""
    question = "How much energy did a generation use on the GPU?"

    def show(hits):
        return pd.DataFrame([{"id": h.id, "topic": h.metadata["topic"], "title": h.metadata["title"],
                              "score": round(h.score, 3)} for h in hits])
    """),
    code("""
    %%traced search
    hits = store.search(question, top_k=top_k)
    show(hits)
    """),
    md("""
    With a filter on the metadata, only documents of one topic compete. The nearest documents
    change: the filter runs inside the index, before the ranking.
    """),
    code("""
    %%traced search-filtered
    filtered = store.search(question, top_k=top_k, where={"topic": "genai"})
    show(filtered)
    """),
    md("""
    The retrieval span of the filtered search. `gen_ai.data_source.id` names the collection,
    `gen_ai.retrieval.top_k` what was asked for and `db.response.returned_rows` what came back.
    The question and the documents are recorded only with content capture on
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
    computed beforehand (search only), and by text with a filter. Each search is one retrieval
    span, so the distribution comes straight from the spans' durations.
    """),
    code("""
    from o11ylab.ai.local_model import get_local_embedder

    questions = [
        "What is a span?", "How are traces linked across services?", "Why sample traces?",
        "What does a histogram bucket hold?", "How is GPU memory reported?",
        "What slows down inference on a CPU?", "What is retrieval-augmented generation?",
        "How are tokens priced?", "What does a collector do?", "How do logs carry trace ids?",
    ]
    # The same model the store embeds with, so these vectors are comparable with the index.
    question_vectors = get_local_embedder(store.embedding_model).embed(questions).vectors
    """),
    code("""
    %%traced latency
    for i in range(latency_queries):
        with o11ylab.span("by text"):
            store.search(questions[i % len(questions)], top_k=top_k)
        with o11ylab.span("by vector"):
            store.search(embedding=question_vectors[i % len(questions)], top_k=top_k)
        with o11ylab.span("by text, filtered"):
            store.search(questions[i % len(questions)], top_k=top_k, where={"topic": "gpu"})
    """),
    md("""
    ## The telemetry this notebook produced

    Each search sits under a small span of our own that names its kind (`by text`, …), so the
    retrieval spans can be grouped without guessing. The percentiles and the histogram are
    computed from the retrieval spans' start and end times, exactly what a tracing backend would
    show. The gap between a text search and a vector search is the time spent embedding the
    question (the `embeddings` span inside each text search); the index itself answers in
    milliseconds.
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
    ax.set_title(f"{latency_queries} searches of each kind on {store.name!r}")
    ax.legend()
    fig.tight_layout()
    plt.show()
    """),
]


# --- 05 RAG pipeline --------------------------------------------------------------------------

RAG = [
    md("""
    # A RAG pipeline as one trace

    Retrieval-augmented generation answers a question from your own documents: embed the
    question, retrieve the nearest documents, build a prompt with them, ask a chat model.
    `o11ylab.ai.ask` runs those stages under one GenAI workflow span, **`invoke_workflow rag`**,
    with one child span per stage:

    ```
    invoke_workflow rag
      embeddings {model}        the question, through the instrumented OpenAI SDK
      retrieval {collection}    Chroma
      rag prompt                which sources went into the prompt, and its size
      chat {model}              the answer, through the instrumented OpenAI SDK
    ```

    The workflow span carries the totals: tokens, cost and the ids of the sources used. This
    notebook indexes the bundled notes, answers questions, shows the waterfall inline, and ends
    with the cost, the energy and the time per question and per stage.
    """),
    parameters("""
    chroma_path = ""   # "" = a new temporary folder, so runs never collide
    questions = [
        "What does the traceparent header carry?",
        "How is the GPU energy of a span measured?",
    ]
    max_tokens = 24    # tokens per answer (short: a CPU generates a few per second)
    top_k = 3          # documents retrieved per question
    """),
    code("""
    %load_ext o11ylab
    import tempfile

    import pandas as pd

    import o11ylab
    from o11ylab import hardware, semconv
    from o11ylab.ai import ask, index_documents
    from o11ylab.ai.pipeline import open_store

    chroma_dir = chroma_path or tempfile.mkdtemp(prefix="o11ylab-chroma-")
    print(f"Chroma folder {chroma_dir}")
    """),
    md("""
    ## Index the documents

    `index_documents` embeds the 32 bundled notes through the same endpoint that will embed the
    questions (one model for both, or the vectors would not be comparable) and upserts them.
    """),
    code("""
    %%traced index-documents
    store = open_store(path=chroma_dir)
    indexed = index_documents(store)
    print(f"{indexed} documents indexed into {store!r}")
    """),
    md("""
    ## Ask one question

    The answer comes with the sources it was built from. The model is tiny (135M parameters)
    and the answers are cut at `max_tokens`, so expect rough prose: what matters here is what
    the telemetry shows about each stage.
    """),
    code("""
    %%traced ask-one
    answer = ask(questions[0], store=store, max_tokens=max_tokens, top_k=top_k)
    print(answer)
    """),
    md("""
    ## The waterfall

    `%o11y trace` draws the cell and everything under it. Each bar starts when its span started,
    relative to the cell: the stages run one after the other, and the chat stage takes most of
    the time. Hover over a row in JupyterLab to see all its attributes.
    """),
    code("""
    %o11y trace
    """),
    md("""
    The workflow span's own attributes: the totals over its stages and the sources it used.
    """),
    code("""
    workflow = [r for r in o11ylab.recent_spans() if r["name"].startswith("invoke_workflow")][-1]
    pd.Series(workflow["attributes"], name=workflow["name"]).to_frame()
    """),
    md("""
    ## Every question

    Each question is one workflow span of its own, all under one cell.
    """),
    code("""
    %%traced ask-all
    answers = [ask(q, store=store, max_tokens=max_tokens, top_k=top_k) for q in questions]
    for a in answers:
        print(f"Q: {a.question}\\nA: {a.answer.strip()}\\n   sources: {', '.join(s.id for s in a.sources)}\\n")
    """),
    md("""
    ## The telemetry this notebook produced

    Per question, from the spans: the tokens and cost on the workflow span, its duration, and
    the GPU energy of its stages (o11ylab reads NVML's energy counter at the start and end of
    each GenAI span). On a machine without an NVIDIA GPU there is no energy to report and the
    notebook says why. The plot splits each question's time into its stages.
    """),
    code("""
    %matplotlib inline
    import matplotlib.pyplot as plt

    records = o11ylab.recent_spans()
    by_id = {r["span_id"]: r for r in records}
    cell = [r for r in records if r["name"] == "ask-all"][-1]
    workflows = sorted((r for r in records if r["parent_span_id"] == cell["span_id"]
                        and r["name"].startswith("invoke_workflow")), key=lambda r: r["start_ns"])
    stages = {w["span_id"]: [r for r in records if r["parent_span_id"] == w["span_id"]]
              for w in workflows}

    rows = []
    for a, w in zip(answers, workflows):
        attributes = w["attributes"]
        energy = [s["attributes"][semconv.HW_ENERGY_SPAN] for s in stages[w["span_id"]]
                  if semconv.HW_ENERGY_SPAN in s["attributes"]]
        rows.append({
            "question": a.question,
            "sources": ", ".join(attributes[semconv.RAG_SOURCE_IDS]),
            "input tokens": attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS],
            "output tokens": attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS],
            "cost $": attributes.get(semconv.GEN_AI_USAGE_COST),
            "seconds": round((w["end_ns"] - w["start_ns"]) / 1e9, 2),
            "GPU J": round(sum(energy), 2) if energy else None,
        })
    per_question = pd.DataFrame(rows)
    sampler = hardware.get_sampler()
    sampler.ready.wait(5)
    if per_question["GPU J"].isna().all():
        print(f"No GPU energy on these spans: {sampler.describe()}.")
    display(per_question)

    def stage(name):
        return name.split(" ")[0] if not name.startswith("rag ") else name

    fig, ax = plt.subplots(figsize=(9, 1 + 0.6 * len(workflows)))
    colours = {"embeddings": "#8cb4e0", "retrieval": "#f0b25c", "rag prompt": "#9bd49b", "chat": "#d98c8c"}
    for row, w in enumerate(workflows):
        for s in stages[w["span_id"]]:
            name = stage(s["name"])
            ax.barh(row, (s["end_ns"] - s["start_ns"]) / 1e9, left=(s["start_ns"] - w["start_ns"]) / 1e9,
                    color=colours.get(name, "#bbbbbb"), label=name)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    ax.set_yticks(range(len(workflows)), [a.question[:45] for a in answers], fontsize=8)
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
    code("""
    %%traced bad-key
    chat("Hello!", model, client=wrong_key_client, max_tokens=4)
    """, "raises-exception"),
    md("""
    One `AuthenticationFailed` error with a hint, not a chained SDK traceback. The chat span
    records `error.type = openai.AuthenticationError` and `http.response.status_code = 401`.

    ## 2. A model the endpoint does not serve
    """),
    code("""
    %%traced unknown-model
    chat("Hello!", "gpt-7-imaginary", max_tokens=4)
    """, "raises-exception"),
    md("""
    The server answers 404 and names the models it does serve; the span's `error.type` is
    `openai.NotFoundError`.

    ## 3. A timeout

    A client whose timeout (`timeout_s`) is shorter than a generation, with retries off. The
    span records `openai.APITimeoutError`; its duration is the time the caller waited. In real
    use, raise `O11YLAB_OPENAI_TIMEOUT` or ask for fewer tokens.
    """),
    code("""
    %%traced timeout
    impatient = get_client(dataclasses.replace(endpoint, timeout_s=timeout_s, max_retries=0))
    chat("Tell me a long story about a span.", model, client=impatient, max_tokens=12)
    """, "raises-exception"),
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
    code("""
    %%traced endpoint-down
    chat("Hello?", model, client=down_client, max_tokens=4)
    """, "raises-exception"),
    md("""
    ## 5. A bug in a cell

    Not every failure is the model's. This cell summarises chat latencies but filters on a model
    name that is not in this kernel, so the list is empty and `statistics.median` raises. The
    cell span gets `error.type = statistics.StatisticsError`, with the exception recorded as a
    span event.
    """),
    code("""
    %%traced summarise-latencies
    import statistics

    latencies_ms = [(r["end_ns"] - r["start_ns"]) / 1e6 for r in o11ylab.recent_spans()
                    if r["name"] == "chat gpt-4o"]  # no such spans in this kernel
    print(f"median chat latency {statistics.median(latencies_ms):.0f} ms")
    """, "raises-exception"),
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
    code("""
    %%traced dimension-mismatch
    store.search(embedding=query_vector, top_k=2)
    """, "raises-exception"),
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
    from o11ylab.otlpjson import read_spans
    from o11ylab.telemetry import get_telemetry

    telemetry = get_telemetry()
    wanted = {int(t, 16) for t in request_traces}
    on_disk = Counter(int(s["trace_id"], 16) for s in read_spans(telemetry.run_dir)
                      if int(s["trace_id"], 16) in wanted)
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
    parser.add_argument("--check", action="store_true",
                        help="Write nothing; exit 1 if a notebook differs from this script.")
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
