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
# # A load test: concurrent users, one trace per request
#
# `users` simulated users ask the RAG pipeline questions at the same time, each on its own
# thread, `requests_per_user` questions each, one after the other. From the telemetry you get:
#
# 1. **latency percentiles, throughput, error rate and cost per request**, as a table and a plot;
# 2. **one trace per request**: each request starts a new root span, so a slow request can be
#    found and opened on its own, and no request's spans end up in another's trace;
# 3. **proof that no span was lost**: the spans created are counted as they start and compared
#    with the spans that reached the run folder after a flush.
#
# The local endpoint runs one small model on the CPU. Requests that arrive while it is busy
# queue, and then run together in one batch (up to 32): the plot shows the queue. The defaults
# keep the whole run to about a minute.

# %% tags=["parameters"]
# Parameters (papermill replaces this cell's values in headless runs)
users = 10  # simulated users, each on its own thread
requests_per_user = 2  # questions each user asks, one after the other
max_tokens = 8  # tokens per answer (short: the CPU run stays quick)
top_k = 2  # documents retrieved per question
chroma_path = ""  # "" = a new temporary folder, so runs never collide

# %%
# %load_ext o11ylab
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
    "What is a span?",
    "What does traceparent carry?",
    "Why sample traces?",
    "What is time to first token?",
    "How is GPU energy measured?",
    "What is OTLP?",
    "What do GenAI client metrics record?",
    "How are tokens priced?",
]

# %% [markdown]
# ## Index, and one warm-up request
#
# The warm-up request loads what loads once (the default model name, the pipeline's telemetry
# handler, Chroma's index) so the first users do not pay for it.

# %%
# %%traced prepare
store = open_store(path=chroma_dir)
index_documents(store)
warm = ask(QUESTIONS[0], store=store, max_tokens=max_tokens, top_k=top_k)
print(f"indexed {store.count()} documents; warm-up answered in trace {warm.trace_id}")


# %% [markdown]
# ## Counting every span
#
# A span processor of our own, added to the SDK's tracer provider, counts spans per trace as
# they start and as they end. After the test we compare these counts with what the exporter
# wrote to the run folder.


# %%
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

# %% [markdown]
# ## Run the users
#
# Inside a traced cell every span would normally nest under the cell. A load test wants the
# opposite: each request is its own unit of work. So each request opens its root span in an
# **empty context** (`opentelemetry.context.Context()`), which starts a new trace whatever the
# thread or task inherited (asyncio tasks, for example, copy the cell's context). A **span
# link** points back to the cell, so the test run and its requests still find each other.

# %%
# %%traced load-test
tracer = trace.get_tracer("o11ylab.notebooks.load_test")
test_cell = trace.get_current_span().get_span_context()
test_started = time.perf_counter()


def one_request(user, n):
    question = QUESTIONS[(user * requests_per_user + n) % len(QUESTIONS)]
    with tracer.start_as_current_span(
        "load-test request",
        context=otel_context.Context(),
        links=[trace.Link(test_cell)],
        attributes={"load_test.user": user, "load_test.request": n},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        started = time.perf_counter()
        row = {
            "user": user,
            "request": n,
            "start_s": started - test_started,
            "trace_id": format(span.get_span_context().trace_id, "032x"),
            "error": None,
        }
        try:
            answer = ask(question, store=store, max_tokens=max_tokens, top_k=top_k)
            row.update(
                input_tokens=answer.usage.input_tokens,
                output_tokens=answer.usage.output_tokens,
                cost_usd=answer.cost_usd,
            )
        except Exception as exc:  # noqa: BLE001 - one failed request must not stop the test
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
results = pd.DataFrame(rows).reindex(
    columns=[
        "user",
        "request",
        "start_s",
        "latency_s",
        "trace_id",
        "error",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ]
)
wall_s = time.perf_counter() - test_started
print(f"{len(results)} requests from {users} users in {wall_s:.1f} s")

# %% [markdown]
# The cell's summary line counts no spans inside it: the requests' spans are in their own
# traces, not under the cell.

# %% [markdown]
# ## Latency, throughput, errors and cost
#
# Latency is per request, from the user's side; throughput is requests completed per second of
# wall time. The cost per request comes from the spans' `gen_ai.usage.cost.amount` (0 USD
# against the local endpoint; real money against a hosted model).

# %%
ok = results[results["error"].isna()]
latency = results["latency_s"]
report = pd.Series(
    {
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
        "cost per request $": ok["cost_usd"].mean()
        if len(ok) and ok["cost_usd"].notna().all()
        else float("nan"),
    },
    name=f"{users} users × {requests_per_user} requests",
).round(3)
report.to_frame()

# %%
# %matplotlib inline
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
    right.barh(
        row["user"],
        row["latency_s"],
        left=row["start_s"],
        color="#d9534f" if row["error"] else "#4a90d9",
        edgecolor="white",
    )
right.set_xlabel("seconds since the test started")
right.set_ylabel("user")
right.set_title("Each request, by user (red: failed)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## One trace per request
#
# Every request has a trace id of its own, none of them the trace of this notebook's cells.
# Here is the slowest request, opened on its own: the request span, the RAG workflow and its
# stages.

# %%
cell_trace = format(test_cell.trace_id, "032x")
request_traces = set(results["trace_id"])
print(
    f"{len(request_traces)} distinct request traces for {len(results)} requests; "
    f"the cells' trace {cell_trace[:8]}… among them: {cell_trace in request_traces}"
)
slowest = results.loc[results["latency_s"].idxmax()]
o11ylab.recent_trace(slowest["trace_id"])

# %% [markdown]
# ## No span lost
#
# `%o11y flush` exports everything still queued. Then, for the request traces, three counts
# must agree: spans started, spans ended, and spans found in the run folder's OTLP-JSON files.
# The exporters' own counters (`%o11y status`) show what failed or still waits in a queue.

# %%
# %o11y flush
import os

from IPython.display import display

from o11ylab.otlpjson import read_spans
from o11ylab.telemetry import get_telemetry

telemetry = get_telemetry()
wanted = {int(t, 16) for t in request_traces}
# This kernel's spans only: the endpoint writes the server side of each request here too.
on_disk = Counter(
    int(s["trace_id"], 16)
    for s in read_spans(telemetry.run_dir)
    if int(s["trace_id"], 16) in wanted and s["resource"].get("process.pid") == os.getpid()
)
created = sum(counter.started[t] for t in wanted)
ended = sum(counter.ended[t] for t in wanted)
exported = sum(on_disk.values())
accounting = pd.DataFrame(
    [
        {
            "request traces": len(wanted),
            "spans created": created,
            "spans ended": ended,
            "spans in the run folder": exported,
            "lost": created - exported,
            "exporter failures": telemetry.lost(),
            "still queued": telemetry.queued(),
        }
    ]
)
display(accounting)
print(
    "no spans lost"
    if created == ended == exported
    else f"{created - exported} spans missing from the run folder"
)
