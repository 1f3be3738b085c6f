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
# # Vector search on Chroma: retrieval spans and latency
#
# A vector store keeps documents next to their embeddings and finds the ones nearest to a
# question. This notebook uses Chroma through its own API, `chromadb.PersistentClient`,
# `collection.add` and `collection.query`, and o11ylab's Chroma instrumentation (activated
# when `chromadb` is imported) traces it: every query is a GenAI **`retrieval {collection}`
# span** (the collection, `top_k`, the number of hits) and every write a database-style span
# (`add {collection}`). You will:
#
# 1. index the bundled notes on observability (32 short documents) in a local Chroma folder;
# 2. search them, with and without a metadata filter;
# 3. measure the latency of many searches and plot its distribution, separating the time spent
#    embedding the question from the time spent in the index.
#
# Chroma embeds with its `OpenAIEmbeddingFunction`, pointed at the same endpoint as the openai
# SDK (the local one: all-MiniLM-L6-v2). It calls the openai SDK, so each embedding is an
# `embeddings` span nested inside the Chroma span that needed it.

# %% tags=["parameters"]
# Parameters (papermill replaces this cell's values in headless runs)
chroma_path = ""  # "" = a new temporary folder, so runs never collide
collection = "o11ylab-notes"  # the Chroma collection
embedding_model = "all-MiniLM-L6-v2"  # the endpoint's embedding model
top_k = 3  # hits per search
latency_queries = 20  # searches of each kind in the latency measurement

# %%
# %load_ext o11ylab
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
documents = json.loads(resources.files("o11ylab").joinpath("data/docs.json").read_text())[
    "documents"
]
print(f"{len(documents)} documents; Chroma folder {chroma_dir}")
pd.Series([d["topic"] for d in documents]).value_counts().rename("documents per topic").to_frame().T

# %% [markdown]
# ## Index
#
# The collection embeds with `OpenAIEmbeddingFunction`: the key and base URL come from the
# environment (`%load_ext o11ylab` set them to the local endpoint), the model by name. Cosine
# distance suits normalized vectors. `collection.add` embeds the 32 texts in one request: the
# trace shows an `add {collection}` span with the `embeddings` span inside it.

# %%
# %%traced index
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
    metadatas=[{"title": d["title"], "topic": d["topic"]} for d in documents],
)
print(f"{notes.count()} documents in collection {notes.name!r}")

# %%
# %o11y trace

# %% [markdown]
# ## Search
#
# `collection.query(query_texts=..., n_results=top_k)` embeds the question, then asks the
# index for the `top_k` nearest documents. The score below is 1 − the cosine distance:
# higher is closer.

# %%
question = "How much energy did a generation use on the GPU?"


def show(result):
    """The hits of a one-question `collection.query` result as a table."""
    return pd.DataFrame(
        [
            {"id": i, "topic": m["topic"], "title": m["title"], "score": round(1 - d, 3)}
            for i, m, d in zip(
                result["ids"][0], result["metadatas"][0], result["distances"][0], strict=True
            )
        ]
    )


# %%
# %%traced search
hits = notes.query(query_texts=[question], n_results=top_k)
show(hits)

# %% [markdown]
# With a `where` filter on the metadata, only documents of one topic compete. The nearest
# documents change: the filter runs inside the index, before the ranking.

# %%
# %%traced search-filtered
filtered = notes.query(query_texts=[question], n_results=top_k, where={"topic": "genai"})
show(filtered)

# %% [markdown]
# The retrieval span of the filtered search. `gen_ai.data_source.id` names the collection,
# `gen_ai.retrieval.top_k` what was asked for (`n_results`), `db.response.returned_rows` what
# came back, `gen_ai.request.model` the embedding function's model. The question and the
# documents are recorded only with content capture on
# (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY`).

# %%
records = o11ylab.recent_spans()
retrieval = [
    r for r in records if r["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == "retrieval"
][-1]
pd.Series(retrieval["attributes"], name=retrieval["name"]).to_frame()

# %% [markdown]
# ## Latency
#
# Three kinds of search, `latency_queries` of each: by text (embed, then search), by a vector
# computed beforehand (`query_embeddings=`: search only), and by text with a filter. Each
# search is one retrieval span, so the distribution comes straight from the spans' durations.

# %%
# %%traced embed-questions
questions = [
    "What is a span?",
    "How are traces linked across services?",
    "Why sample traces?",
    "What does a histogram bucket hold?",
    "How is GPU memory reported?",
    "What slows down inference on a CPU?",
    "What is retrieval-augmented generation?",
    "How are tokens priced?",
    "What does a collector do?",
    "How do logs carry trace ids?",
]
# The collection's own embedding function, so these vectors are comparable with the index.
question_vectors = embedder(questions)

# %%
# %%traced latency
for i in range(latency_queries):
    with o11ylab.span("by text"):
        notes.query(query_texts=[questions[i % len(questions)]], n_results=top_k)
    with o11ylab.span("by vector"):
        notes.query(query_embeddings=[question_vectors[i % len(questions)]], n_results=top_k)
    with o11ylab.span("by text, filtered"):
        notes.query(
            query_texts=[questions[i % len(questions)]], n_results=top_k, where={"topic": "gpu"}
        )

# %% [markdown]
# ## The telemetry this notebook produced
#
# Each search sits under a small span of our own (`with o11ylab.span("by text"):`) that names
# its kind, so the retrieval spans can be grouped without guessing. The percentiles and the
# histogram are computed from the retrieval spans' start and end times, exactly what a tracing
# backend would show. The gap between a text search and a vector search is the time spent
# embedding the question (the `embeddings` span inside each text search); the index itself
# answers in milliseconds.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

records = o11ylab.recent_spans()
by_id = {r["span_id"]: r for r in records}
latency_cell = [r for r in records if r["name"] == "latency"][-1]
durations = {}
for r in records:
    parent = by_id.get(r["parent_span_id"])
    if (
        r["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == "retrieval"
        and parent
        and parent["parent_span_id"] == latency_cell["span_id"]
    ):
        durations.setdefault(parent["name"], []).append((r["end_ns"] - r["start_ns"]) / 1e6)

percentiles = pd.DataFrame(
    {
        kind: {
            "searches": len(ms),
            "p50 ms": np.percentile(ms, 50),
            "p95 ms": np.percentile(ms, 95),
            "max ms": max(ms),
        }
        for kind, ms in durations.items()
    }
).T.round(1)
display(percentiles)

fig, ax = plt.subplots(figsize=(8, 4))
bins = np.logspace(
    np.log10(min(min(v) for v in durations.values())),
    np.log10(max(max(v) for v in durations.values())),
    30,
)
for kind, ms in durations.items():
    ax.hist(ms, bins=bins, alpha=0.6, label=f"{kind} (p50 {np.percentile(ms, 50):.1f} ms)")
ax.set_xscale("log")
ax.set_xlabel("retrieval span duration (ms, log scale)")
ax.set_ylabel("searches")
ax.set_title(f"{latency_queries} searches of each kind on {notes.name!r}")
ax.legend()
fig.tight_layout()
plt.show()
