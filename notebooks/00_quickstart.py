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
# # o11ylab quickstart
#
# This notebook turns its own kernel into an OpenTelemetry-instrumented service. You will:
#
# 1. load the extension, which starts traces, metrics and logs for this kernel;
# 2. run cells as **spans** with `%%traced`, with your own spans nested inside;
# 3. send a log line that carries the trace and span ids of the cell that wrote it;
# 4. look at the result inline with `%o11y trace`, as a DataFrame, and see where it was exported.
#
# Nothing here needs an API key or a network: by default telemetry goes to a local run folder
# (OTLP-JSON lines) and to an in-memory buffer. Set `OTEL_EXPORTER_OTLP_ENDPOINT` before starting
# the kernel and the same spans go to a collector (Grafana Alloy, for example) as well.

# %% tags=["parameters"]
# Parameters (papermill replaces this cell's values in headless runs)
n_items = 5
label = "quickstart"

# %% [markdown]
# ## Load the extension
#
# `%load_ext o11ylab` is fast: the heavy parts load lazily. Loading it twice does nothing twice.

# %%
# %load_ext o11ylab
import logging

import o11ylab

log = logging.getLogger("quickstart")

# %% [markdown]
# ## A traced cell with a nested span
#
# `%%traced NAME` makes the cell one span. `o11ylab.span(...)` opens a child span inside it: any
# span started while the cell runs, in any library that uses OpenTelemetry, nests under the cell.
# The log line is exported as an OpenTelemetry log record that carries this cell's trace id.
# After the cell, a one-line summary shows its duration, the spans inside and the trace id.

# %%
# %%traced prepare-data --attr notebook=quickstart
with o11ylab.span("compute squares", items=n_items):
    squares = [i * i for i in range(n_items)]
log.info("computed %d squares for %s", len(squares), label)
squares

# %%
# %%traced summarise
with o11ylab.span("sum"):
    total = sum(squares)
with o11ylab.span("mean"):
    mean = total / len(squares)
print(f"total={total} mean={mean:.2f}")

# %% [markdown]
# ## The trace, inline
#
# `%o11y trace` shows the last traced cell and everything under it as a waterfall: each row is a
# span, its bar shows when it ran relative to the cell. In a terminal it prints as a text tree.

# %%
# %o11y trace

# %% [markdown]
# The same spans as a pandas DataFrame (one row per span, attributes as columns) for your own
# analysis:

# %%
df = o11ylab.spans_df()
df[["name", "duration_ms", "status", "trace_id"]].tail(6)

# %% [markdown]
# ## Where did the telemetry go?
#
# `%o11y status` lists every exporter with how many items it delivered and how many it lost (a
# dead collector shows up here, never as a slow cell), the run folder with the OTLP-JSON files,
# and the Prometheus `/metrics` address. No header, key or token is ever shown.

# %%
# %o11y status
