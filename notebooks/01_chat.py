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
# # Chat completions: your own OpenAI code, traced
#
# Everything below is plain OpenAI SDK code, `openai.OpenAI()` and
# `client.chat.completions.create`, the way you would write it anywhere. `%load_ext o11ylab`
# switches on the official OpenTelemetry GenAI instrumentation for the SDK (and for LangChain,
# further down) without a change to that code. You will see:
#
# 1. one **`chat {model}` span per call**, with the model, token usage, finish reason and cost;
# 2. **streaming**: the span stays open until the last chunk and records the time to the first one;
# 3. **roll-ups**: a `%%traced` cell adds up the tokens and cost of every call inside it;
# 4. **LangChain**: a `ChatOpenAI` call, traced by the official LangChain instrumentation, in the
#    same cell tree;
# 5. **content capture**: what changes on the span when prompts and answers may be recorded.
#
# With neither `OPENAI_API_KEY` nor `OPENAI_BASE_URL` set, `%load_ext o11ylab` points the SDK at
# o11ylab's local OpenAI-compatible endpoint (`o11ylab serve`, SmolLM2-135M-Instruct on this
# machine, started on first use, offline), which costs nothing. Set those variables and the
# same code talks to OpenAI, vLLM or Ollama. Answers are kept short (`max_tokens`) so the
# notebook runs in a minute or two on a CPU.

# %% tags=["parameters"]
# Parameters (papermill replaces this cell's values in headless runs)
model = "SmolLM2-135M-Instruct"  # the local endpoint's chat model; e.g. "gpt-4o-mini" on OpenAI
max_tokens = 16  # tokens per answer (short: a CPU generates a few per second)
compare_with = "gpt-4o-mini"  # a model from the price table, to price the same tokens

# %% [markdown]
# ## Load the extension, make a client
#
# `openai.OpenAI()` takes no arguments: it reads `OPENAI_BASE_URL` and `OPENAI_API_KEY`, which
# o11ylab set to its local endpoint because neither was set (the first request starts the
# endpoint, a few seconds). `client.models.list()` shows what the endpoint serves. The key is
# never printed.

# %%
# %load_ext o11ylab
import openai
import pandas as pd

import o11ylab
from o11ylab import pricing, semconv

client = openai.OpenAI()
served = [m.id for m in client.models.list()]
print(f"The client talks to {client.base_url}, which serves {served}; chat model {model}.")

# %% [markdown]
# ## One call, one span
#
# `%%traced first-chat` makes the cell a span; the chat call inside it becomes a child span,
# `chat SmolLM2-135M-Instruct`, made by the OpenAI instrumentation. After the cell, the summary
# line shows the cell's duration, the spans inside it, the tokens and the cost.

# %%
# %%traced first-chat
response = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "In one sentence, what is a trace?"}],
    max_tokens=max_tokens,
    temperature=0,
)
print(response.choices[0].message.content.strip())
print(
    f"{response.usage.prompt_tokens} input + {response.usage.completion_tokens} output tokens, "
    f"finish reason {response.choices[0].finish_reason!r}"
)


# %% [markdown]
# Here is everything that span carries, read back from o11ylab's in-memory copy of the spans
# this kernel exported (`o11ylab.recent_spans()`). The `gen_ai.*` names follow the
# OpenTelemetry GenAI semantic conventions; `server.*` says where the call went; the cost is
# added by o11ylab: 0 USD with `gen_ai.usage.cost.source = local` for a model o11ylab serves
# itself, the list price from the bundled `genai-prices` data for a hosted one. Note what is
# *not* there: neither the prompt nor the answer.


# %%
def spans_under(cell_name, operation=None):
    """This kernel's spans right under the last run of the traced cell `cell_name`."""
    records = o11ylab.recent_spans()
    cell = [r for r in records if r["name"] == cell_name][-1]
    return [
        r
        for r in records
        if r["parent_span_id"] == cell["span_id"]
        and (operation is None or r["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == operation)
    ]


first_span = spans_under("first-chat", "chat")[-1]
pd.Series(first_span["attributes"], name=first_span["name"]).to_frame()

# %% [markdown]
# ## Streaming
#
# With `stream=True` the text arrives chunk by chunk. The span stays open until the stream is
# drained and records `gen_ai.response.time_to_first_chunk`, the latency a user actually
# feels in a chat UI. `stream_options={"include_usage": True}` asks the server for a last chunk
# with the token counts; without it a stream reports no tokens, so there is nothing to price.

# %%
# %%traced streaming
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

# %%
streamed = spans_under("streaming", "chat")[-1]["attributes"]
print(
    f"on the span: stream={streamed.get('gen_ai.request.stream')}, time to first chunk "
    f"{streamed[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] * 1000:.0f} ms, "
    f"{streamed.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS)} output tokens, "
    f"cost ${streamed.get(semconv.GEN_AI_USAGE_COST)} ({streamed.get(semconv.GEN_AI_USAGE_COST_SOURCE)})"
)

# %% [markdown]
# ## Tokens and cost per call and per cell
#
# Three questions in one traced cell: three chat spans under one cell span. When the cell ends
# o11ylab adds up the tokens and the cost of its GenAI calls and puts the totals on the cell
# span (`o11ylab.cell.input_tokens`, `o11ylab.cell.output_tokens`, `o11ylab.cell.cost_usd`),
# so a dashboard can sum cost by notebook or by cell without walking the tree.

# %%
# %%traced three-questions
questions = ["What is a span?", "What is a metric?", "What is a log record?"]
for question in questions:
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
    )
    print(f"{question} → {response.choices[0].message.content.strip()[:90]}")

# %% [markdown]
# The table prices the same token counts at the list price of `compare_with` with
# `o11ylab.pricing.price_call` (offline, from `genai-prices`' bundled data), to show what this
# cell would cost against a hosted model. Your own prices (or a price for local GPU time) go in
# a file named by `O11YLAB_PRICING_FILE`.

# %%
table = pricing.load_table()
rows = []
for record in spans_under("three-questions", "chat"):
    a = record["attributes"]
    hosted = pricing.price_call(
        compare_with,
        None,
        a[semconv.GEN_AI_USAGE_INPUT_TOKENS],
        a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS],
    )
    rows.append(
        {
            "span": record["name"],
            "ms": round((record["end_ns"] - record["start_ns"]) / 1e6),
            "input tokens": a[semconv.GEN_AI_USAGE_INPUT_TOKENS],
            "output tokens": a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS],
            "cost $": a.get(semconv.GEN_AI_USAGE_COST),
            "cost source": a.get(semconv.GEN_AI_USAGE_COST_SOURCE),
            f"at {compare_with} $": None if hosted is None else hosted.amount,
        }
    )
calls = pd.DataFrame(rows)
cell = [r for r in o11ylab.recent_spans() if r["name"] == "three-questions"][-1]["attributes"]
print(
    f"cell span three-questions: {cell[semconv.CELL_INPUT_TOKENS]} input and "
    f"{cell[semconv.CELL_OUTPUT_TOKENS]} output tokens, "
    f"${cell.get(semconv.CELL_COST, float('nan')):.6f}, over {cell[semconv.CELL_SPAN_COUNT]} spans "
    f"(price table {table.version} of {table.date})"
)
calls

# %% [markdown]
# ## The same model through LangChain
#
# LangChain's `ChatOpenAI` reads the same `OPENAI_BASE_URL` and `OPENAI_API_KEY`, so it reaches
# the same endpoint with no configuration. `%load_ext o11ylab` also switched on the official
# LangChain instrumentation (`opentelemetry-instrumentation-genai-langchain`, activated when
# `langchain_core` is first imported). It makes the `chat {model}` span from LangChain's own
# callbacks, and, through `opentelemetry-util-genai`, suppresses the OpenAI SDK's span for the
# same request underneath: one call is one span, not two. The span's instrumentation scope says
# which library made it.

# %%
# %%traced langchain
from langchain_openai import ChatOpenAI

llm = ChatOpenAI(model=model, max_tokens=max_tokens, temperature=0)
message = llm.invoke("In one sentence, what is a metric?")
print(message.content.strip())
print(f"LangChain's usage: {message.usage_metadata}")

# %% [markdown]
# What sits under the two cells, side by side: the same span name and the same GenAI
# attributes, from two different instrumentations (the `scope` column). `%o11y trace` draws
# the LangChain cell's tree.

# %%
pd.DataFrame(
    [
        {
            "cell": cell_name,
            "span": r["name"],
            "made by (scope)": r["scope"],
            "input tokens": r["attributes"].get(semconv.GEN_AI_USAGE_INPUT_TOKENS),
            "output tokens": r["attributes"].get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
            "cost $": r["attributes"].get(semconv.GEN_AI_USAGE_COST),
            "cost source": r["attributes"].get(semconv.GEN_AI_USAGE_COST_SOURCE),
        }
        for cell_name in ("first-chat", "langchain")
        for r in spans_under(cell_name)
    ]
)

# %%
# %o11y trace

# %% [markdown]
# ## What content capture changes
#
# By default o11ylab records **no content**: no prompt, no answer, no document, no cell source.
# Telemetry often leaves the machine, and prompts may hold personal data. The standard variable
# `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` opts in: `SPAN_ONLY` puts the messages
# on the spans (`gen_ai.input.messages`, `gen_ai.output.messages`, and `jupyter.cell.source`
# on cell spans), `EVENT_ONLY` sends them as log events, `SPAN_AND_EVENT` does both.
#
# The instrumentation reads the variable once, when it starts, so it belongs in the kernel's
# environment before `%load_ext o11ylab` (or in `OTEL_*` settings of your Jupyter server).
# To compare both settings side by side, the next cell makes the same SDK call in a fresh
# Python process (`o11ylab.init()` is the plain-process twin of `%load_ext o11ylab`) with
# `SPAN_ONLY`. It passes this cell's span along as a W3C `traceparent`, so the other
# process's chat span joins this notebook's trace, under this cell, and it writes its spans
# into this kernel's run folder. It inherits `OPENAI_BASE_URL`, so it calls the same endpoint.

# %%
from o11ylab.telemetry import get_telemetry

telemetry = get_telemetry()
print(f"content capture in this kernel: {telemetry.settings.capture_content.value}")
print(f"prompt on the first-chat span: {semconv.GEN_AI_INPUT_MESSAGES in first_span['attributes']}")

# %%
# %%traced content-capture-on
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
env = {
    **os.environ,
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
    "TRACEPARENT": carrier["traceparent"],
    "O11YLAB_RUN_DIR": str(telemetry.run_dir),
    "O11YLAB_PROMETHEUS_PORT": "0",
}
child = subprocess.run(
    [sys.executable, "-c", CHILD, model, str(max_tokens)],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
)
if child.returncode != 0:
    raise RuntimeError(f"the SPAN_ONLY process failed:\n{child.stderr[-2000:]}")
captured = json.loads(child.stdout.strip().splitlines()[-1])
print(
    f"the SPAN_ONLY process made span {captured[semconv.GEN_AI_REQUEST_MODEL]!r} with "
    f"{len(captured)} attributes"
)


# %% [markdown]
# Side by side: the attributes the two spans do not share, then a few they do. Token counts
# and cost are the same with capture on or off; only the content is added.


# %%
def shorten(value, width=90):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


off = first_span["attributes"]
# Hardware figures (o11ylab.*) are measured in the kernel only; leave them out here.
only = sorted(k for k in set(off) ^ set(captured) if not k.startswith("o11ylab."))
shared = [
    semconv.GEN_AI_REQUEST_MODEL,
    semconv.GEN_AI_USAGE_INPUT_TOKENS,
    semconv.GEN_AI_USAGE_COST,
]
pd.DataFrame(
    [
        {
            "attribute": k,
            telemetry.settings.capture_content.value + " (this kernel)": shorten(off.get(k, "—")),
            "SPAN_ONLY (fresh process)": shorten(captured.get(k, "—")),
        }
        for k in only + shared
        if k not in (semconv.GEN_AI_RESPONSE_ID, semconv.SERVER_PORT)
    ]
).set_index("attribute")

# %% [markdown]
# ## The telemetry this notebook produced
#
# `%o11y flush` exports what is still queued; then we read the run folder, the OTLP-JSON files
# every process wrote, and list each traced cell of this notebook with the chat spans under it.
# The content-capture cell's chat span came from the other process, yet it sits under that
# cell, in the same trace.

# %%
# %o11y flush
from o11ylab.otlpjson import read_spans

cells = {
    r["span_id"]: r for r in o11ylab.recent_spans() if semconv.CELL_SOURCE_SHA256 in r["attributes"]
}
on_disk = [
    s
    for s in read_spans(telemetry.run_dir)
    if s["parent_span_id"] in cells and s["attributes"].get(semconv.GEN_AI_OPERATION_NAME) == "chat"
]
summary = pd.DataFrame(
    [
        {
            "cell": cells[s["parent_span_id"]]["name"],
            "trace": s["trace_id"][:8] + "…",
            "chat span": s["name"],
            "process": s["resource"].get("process.pid"),
            "input tokens": s["attributes"].get(semconv.GEN_AI_USAGE_INPUT_TOKENS),
            "output tokens": s["attributes"].get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
            "cost $": s["attributes"].get(semconv.GEN_AI_USAGE_COST),
            "prompt recorded": semconv.GEN_AI_INPUT_MESSAGES in s["attributes"],
        }
        for s in sorted(on_disk, key=lambda s: s["start_ns"])
    ]
)
summary
