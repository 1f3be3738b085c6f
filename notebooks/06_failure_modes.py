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
# # Failure modes: what the telemetry shows when things go wrong
#
# Six things that go wrong in AI work, each in its own traced cell, and what each leaves in the
# telemetry:
#
# | failure | what you would see |
# |---|---|
# | a wrong API key | HTTP 401 |
# | a model the endpoint does not serve | HTTP 404 |
# | a server slower than the client's timeout | no answer at all |
# | the endpoint is down | no connection, after retries |
# | a bug in your own cell | a Python exception |
# | vectors of the wrong size for the index | refused before it reaches Chroma |
#
# Every failed operation ends its span with status `ERROR` and an **`error.type`** attribute,
# the attribute the OpenTelemetry conventions give for failures and the one to group errors by.
# Each failing cell shows one traceback and its cell span is marked failed too. The cells
# that fail on purpose carry the `raises-exception` tag, so a headless run (papermill) carries
# on past them. The last cell lists every error span.

# %% tags=["parameters"]
# Parameters (papermill replaces this cell's values in headless runs)
timeout_s = 0.02  # the client timeout in the timeout demo (seconds): shorter than any generation
chroma_path = ""  # "" = a new temporary folder, so runs never collide

# %%
# %load_ext o11ylab
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

# %% [markdown]
# ## 1. A wrong API key
#
# `o11ylab serve` can require a key (`--api-key`, or `O11YLAB_SERVE_API_KEY`). We start a
# second local endpoint that does, with a random key, and call it with another one. Neither
# key is ever printed, and o11ylab masks anything shaped like a key in span status messages.
# Starting the second endpoint loads the model again (a few seconds).

# %%
from o11ylab.serve import LocalEndpoint

guarded = LocalEndpoint(api_key=secrets.token_urlsafe(24), echo=False).start()
wrong_key = "sk-wrong-" + secrets.token_hex(12)  # not the server's key
wrong_key_client = get_client(
    Endpoint("custom", guarded.base_url, max_retries=0, api_key=wrong_key)
)
print(f"a second endpoint at {guarded.base_url} requires a key")

# %% tags=["raises-exception"]
# %%traced bad-key
chat("Hello!", model, client=wrong_key_client, max_tokens=4)

# %% [markdown]
# One `AuthenticationFailed` error with a hint, not a chained SDK traceback. The chat span
# records `error.type = openai.AuthenticationError` and `http.response.status_code = 401`.
#
# ## 2. A model the endpoint does not serve

# %% tags=["raises-exception"]
# %%traced unknown-model
chat("Hello!", "gpt-7-imaginary", max_tokens=4)

# %% [markdown]
# The server answers 404 and names the models it does serve; the span's `error.type` is
# `openai.NotFoundError`.
#
# ## 3. A timeout
#
# A client whose timeout (`timeout_s`) is shorter than a generation, with retries off. The
# span records `openai.APITimeoutError`; its duration is the time the caller waited. In real
# use, raise `O11YLAB_OPENAI_TIMEOUT` or ask for fewer tokens.

# %% tags=["raises-exception"]
# %%traced timeout
impatient = get_client(dataclasses.replace(endpoint, timeout_s=timeout_s, max_retries=0))
chat("Tell me a long story about a span.", model, client=impatient, max_tokens=12)

# %% [markdown]
# ## 4. The endpoint is down
#
# Stop the guarded endpoint, then call its address again, this time with the SDK's usual two
# retries. Each retry is an event on the same span (`o11ylab.http.retry`) and
# `http.request.resend_count` says how many were made: a trace shows the retries that a
# slow call hid.

# %%
guarded.stop()
down_client = get_client(Endpoint("custom", guarded.base_url, max_retries=2))

# %% tags=["raises-exception"]
# %%traced endpoint-down
chat("Hello?", model, client=down_client, max_tokens=4)

# %% [markdown]
# ## 5. A bug in a cell
#
# Not every failure is the model's. This cell summarises chat latencies but filters on a model
# name that is not in this kernel, so the list is empty and `statistics.median` raises. The
# cell span gets `error.type = statistics.StatisticsError`, with the exception recorded as a
# span event.

# %% tags=["raises-exception"]
# %%traced summarise-latencies
import statistics

latencies_ms = [
    (r["end_ns"] - r["start_ns"]) / 1e6
    for r in o11ylab.recent_spans()
    if r["name"] == "chat gpt-4o"
]  # no such spans in this kernel
print(f"median chat latency {statistics.median(latencies_ms):.0f} ms")

# %% [markdown]
# ## 6. Vectors of the wrong size
#
# A collection holds 384-dimensional vectors (all-MiniLM-L6-v2). A query vector cut to 128
# numbers (someone "saved space") cannot be compared with them. The store refuses it before it
# reaches Chroma, and the retrieval span says `error.type = DimensionMismatchError`.

# %%
from o11ylab.ai.vectorstore import VectorStore

notes = ["Spans time one operation.", "Traces link spans.", "GPUs draw power."]
store = VectorStore("failure-demo", path=chroma_dir, embedder=None)
store.upsert(notes, ids=["span", "trace", "gpu"], embeddings=embed(notes).vectors)
query_vector = embed("What links spans?").vectors[0][:128]

# %% tags=["raises-exception"]
# %%traced dimension-mismatch
store.search(embedding=query_vector, top_k=2)

# %% [markdown]
# ## The error spans this notebook produced
#
# Every span of this kernel with status `ERROR`, with the cell it ran in. Two kinds appear:
# the operation spans (chat, retrieval) say what failed in the terms of the operation
# (`openai.AuthenticationError`, HTTP status, retries); the cell spans say what your code saw
# (`AuthenticationFailed`, `StatisticsError`). Group by `error.type` in your tracing backend to
# count each kind. The last line checks that the wrong key appears in no span.

# %%
import json

from IPython.display import display

# %o11y flush
records = o11ylab.recent_spans()
by_id = {r["span_id"]: r for r in records}
errors = pd.DataFrame(
    [
        {
            "span": r["name"],
            "in cell": by_id.get(r["parent_span_id"], {}).get("name", "(notebook)"),
            "error.type": r["attributes"].get(semconv.ERROR_TYPE),
            "HTTP": r["attributes"].get(semconv.HTTP_RESPONSE_STATUS_CODE),
            "retries": r["attributes"].get(semconv.HTTP_REQUEST_RESEND_COUNT),
            "ms": round((r["end_ns"] - r["start_ns"]) / 1e6, 1),
        }
        for r in records
        if r["status"] == "ERROR"
    ]
).astype({"HTTP": "Int64", "retries": "Int64"})
display(errors)
print("wrong key in any span:", any(wrong_key in json.dumps(r, default=str) for r in records))
