# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A RAG pipeline with the plain libraries, as one trace
#
# Retrieval-augmented generation answers a question from your own documents: retrieve the
# nearest documents, build a prompt with them, ask a chat model. This notebook writes it with
# the libraries themselves, Chroma for the documents and the OpenAI SDK for the answer, and
# adds nothing but `%%traced` cells and one `with o11ylab.span(...)`. The instrumentations that
# `%load_ext o11ylab` switched on give the rest:
#
# ```
# ask-one                                   the traced cell
#   rag answer                              our one span around the pipeline
#     retrieval {collection}                Chroma's collection.query (o11ylab's Chroma instrumentation)
#       embeddings {model}                  Chroma's OpenAIEmbeddingFunction → the openai SDK
#         POST /v1/embeddings               the local endpoint, in its own process
#     chat {model}                          client.chat.completions.create
#       POST /v1/chat/completions           the local endpoint
#         chat {model}                      the generation itself (o11ylab's transformers instrumentation)
# ```
#
# The endpoint's spans join the notebook's trace because o11ylab's openai instrumentation
# sends a W3C `traceparent` header with every request, and the endpoint writes them into the
# same run folder. Tokens and cost sit on the GenAI spans (0 USD, source `local`, here). The
# notebook ends with the time, tokens, cost and energy per question and per stage.

# %% tags=["parameters"]
# Parameters (papermill replaces this cell's values in headless runs)
chroma_path = ""  # "" = a new temporary folder, so runs never collide
collection = "o11ylab-rag"  # the Chroma collection
chat_model = "SmolLM2-135M-Instruct"  # the endpoint's chat model; e.g. "gpt-4o-mini" on OpenAI
embedding_model = "all-MiniLM-L6-v2"  # the endpoint's embedding model
questions = [
    "What does the traceparent header carry?",
    "How is the GPU energy of a span measured?",
]
max_tokens = 24  # tokens per answer (short: a CPU generates a few per second)
top_k = 3  # documents retrieved per question

# %%
# %load_ext o11ylab
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
documents = json.loads(resources.files("o11ylab").joinpath("data/docs.json").read_text())[
    "documents"
]
print(f"{len(documents)} documents; Chroma folder {chroma_dir}; chat calls to {client.base_url}")

# %% [markdown]
# ## Index the documents
#
# The collection embeds with `OpenAIEmbeddingFunction` against the same endpoint that will
# embed the questions (one model for both, or the vectors would not be comparable).

# %%
# %%traced index-documents
chroma = chromadb.PersistentClient(path=chroma_dir)
embedder = OpenAIEmbeddingFunction(
    api_key=os.environ["OPENAI_API_KEY"],
    api_base=os.environ["OPENAI_BASE_URL"],
    model_name=embedding_model,
)
notes = chroma.get_or_create_collection(
    collection, embedding_function=embedder, configuration={"hnsw": {"space": "cosine"}}
)
notes.add(
    documents=[d["text"] for d in documents],
    ids=[d["id"] for d in documents],
    metadatas=[{"title": d["title"]} for d in documents],
)
print(f"{notes.count()} documents in collection {notes.name!r}")


# %% [markdown]
# ## The pipeline
#
# A dozen lines: retrieve, build the prompt from the hits, answer. The `with o11ylab.span(...)`
# groups one question's spans under a span of our own, and records which notes went into the
# prompt.


# %%
def answer(question):
    """Answer `question` from the `top_k` nearest notes; returns the answer and its sources."""
    with o11ylab.span("rag answer") as span:
        hits = notes.query(query_texts=[question], n_results=top_k)
        sources = hits["ids"][0]
        context = "\n\n".join(
            f"[{i}] {text}" for i, text in zip(sources, hits["documents"][0], strict=True)
        )
        span.set_attribute("rag.source_ids", sources)
        response = client.chat.completions.create(
            model=chat_model,
            messages=[
                {"role": "system", "content": "Answer briefly from these notes:\n\n" + context},
                {"role": "user", "content": question},
            ],
            max_tokens=max_tokens,
            temperature=0,
        )
        return {
            "question": question,
            "answer": response.choices[0].message.content.strip(),
            "sources": sources,
        }


# %% [markdown]
# ## Ask one question
#
# The model is tiny (135M parameters) and the answers are cut at `max_tokens`, so expect rough
# prose: what matters here is what the telemetry shows about each stage.

# %%
# %%traced ask-one
result = answer(questions[0])
print(f"Q: {result['question']}\nA: {result['answer']}\n   sources: {', '.join(result['sources'])}")

# %% [markdown]
# ## The waterfall
#
# `%o11y trace` draws the cell and everything this kernel recorded under it. Each bar starts
# when its span started, relative to the cell: retrieval (with the question's embedding
# inside it), then the chat call, which takes most of the time.

# %%
# %o11y trace

# %% [markdown]
# ## One trace, across processes
#
# The kernel only holds its own spans. The endpoint's spans (the HTTP `SERVER` spans and the
# generation inside the chat request) were written by the endpoint process into the same run
# folder. `%o11y flush` exports what the kernel still queues; the endpoint exports every
# second, so we wait until its spans are there, then print the cell's whole tree from the
# files, with the process that made each span.

# %%
# %o11y flush
from o11ylab.otlpjson import read_spans
from o11ylab.telemetry import get_telemetry

telemetry = get_telemetry()
cell = [r for r in o11ylab.recent_spans() if r["name"] == "ask-one"][-1]


def tree(root_id, spans):
    """(depth, span) for every span under root_id, depth first, in start order."""
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
    """Every HTTP call (CLIENT, 3) and every request it served (SERVER, 2) has its child."""
    parents = {s["parent_span_id"] for _, s in rows}
    return all(
        s["span_id"] in parents
        for _, s in rows
        if s["kind"] in (2, 3) and s["name"].split(" ")[0] in ("chat", "embeddings", "POST")
    )


deadline = time.monotonic() + 15  # against a hosted API no server spans come: stop waiting
while True:
    in_trace = [s for s in read_spans(telemetry.run_dir) if s["trace_id"] == cell["trace_id"]]
    rows = tree(cell["span_id"], in_trace)
    if answered(rows) or time.monotonic() > deadline:
        break
    time.sleep(1)
pd.DataFrame(
    [
        {
            "span": "  " * depth + s["name"],
            "process": s["resource"].get("service.name"),
            "ms": round((s["end_ns"] - s["start_ns"]) / 1e6, 1),
            "input tokens": s["attributes"].get(semconv.GEN_AI_USAGE_INPUT_TOKENS),
            "output tokens": s["attributes"].get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
            "cost $": s["attributes"].get(semconv.GEN_AI_USAGE_COST),
            "cost source": s["attributes"].get(semconv.GEN_AI_USAGE_COST_SOURCE),
        }
        for depth, s in rows
    ]
).astype(object).fillna("")

# %% [markdown]
# ## Every question
#
# Each question is one `rag answer` span of its own, all under one cell.

# %%
# %%traced ask-all
answers = [answer(q) for q in questions]
for a in answers:
    print(f"Q: {a['question']}\nA: {a['answer']}\n   sources: {', '.join(a['sources'])}\n")

# %% [markdown]
# ## The telemetry this notebook produced
#
# Per question, from the kernel's spans: the tokens and cost of its GenAI spans (the question's
# embedding and the chat call), its duration, and the GPU energy of its GenAI spans (o11ylab
# reads NVML's energy counter at the start and end of each). On a machine without an NVIDIA
# GPU there is no energy to report and the notebook says why. The plot splits each question's
# time into its stages.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
from IPython.display import display

records = o11ylab.recent_spans()
cell = [r for r in records if r["name"] == "ask-all"][-1]
pipelines = sorted(
    (r for r in records if r["parent_span_id"] == cell["span_id"] and r["name"] == "rag answer"),
    key=lambda r: r["start_ns"],
)


def genai_below(span_id):
    """The GenAI spans anywhere under span_id."""
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
for a, p in zip(answers, pipelines, strict=True):
    spans = genai_below(p["span_id"])
    energy = [
        s["attributes"][semconv.HW_ENERGY_SPAN]
        for s in spans
        if semconv.HW_ENERGY_SPAN in s["attributes"]
    ]
    rows.append(
        {
            "question": a["question"],
            "sources": ", ".join(p["attributes"]["rag.source_ids"]),
            "spans": ", ".join(s["name"].split(" ")[0] for s in spans),
            "input tokens": sum(
                s["attributes"].get(semconv.GEN_AI_USAGE_INPUT_TOKENS, 0) for s in spans
            ),
            "output tokens": sum(
                s["attributes"].get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 0) for s in spans
            ),
            "cost $": sum(s["attributes"].get(semconv.GEN_AI_USAGE_COST, 0.0) for s in spans),
            "seconds": round((p["end_ns"] - p["start_ns"]) / 1e9, 2),
            "GPU J": round(sum(energy), 2) if energy else None,
        }
    )
per_question = pd.DataFrame(rows)
sampler = hardware.get_sampler()
sampler.ready.wait(5)
if per_question["GPU J"].isna().all():
    print("No GPU energy on these spans: they ran without a GPU (`%o11y status` says why).")
display(per_question)

# A transparent background and mid-grey text read on JupyterLab's light and dark themes alike;
# the legend sits outside the axes, so it never covers the ends of the bars.
neutral = "#8a8a8a"
theme_neutral = {
    "figure.facecolor": "none",
    "axes.facecolor": "none",
    "savefig.transparent": True,
    "text.color": neutral,
    "axes.labelcolor": neutral,
    "axes.edgecolor": neutral,
    "xtick.color": neutral,
    "ytick.color": neutral,
}
with plt.rc_context(theme_neutral):
    fig, ax = plt.subplots(figsize=(9, 1 + 0.6 * len(pipelines)))
    colours = {"retrieval": "#e69f00", "embeddings": "#56b4e9", "chat": "#cc79a7"}
    for row, p in enumerate(pipelines):
        for s in genai_below(p["span_id"]):
            name = s["name"].split(" ")[0]
            height = 0.35 if name == "embeddings" else 0.7  # the embedding runs inside retrieval
            ax.barh(
                row,
                (s["end_ns"] - s["start_ns"]) / 1e9,
                left=(s["start_ns"] - p["start_ns"]) / 1e9,
                height=height,
                color=colours.get(name, "#999999"),
                label=name,
            )
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(
        unique.values(),
        unique.keys(),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
    )
    ax.set_yticks(range(len(pipelines)), [a["question"][:45] for a in answers], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the question was asked")
    ax.set_title("Where each question's time went")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    plt.show()
