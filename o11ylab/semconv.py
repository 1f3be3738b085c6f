"""Every span, attribute and metric name o11ylab emits, in one module.

The GenAI and hardware semantic conventions are still moving; when a name changes upstream it
changes here and nowhere else. Names under ``jupyter.*`` and ``o11ylab.*`` are o11ylab's own
extensions (no upstream convention covers notebooks yet); ``gen_ai.usage.cost.*`` follows the
open proposal for cost attributes and is marked as an extension until it is accepted.
"""

from __future__ import annotations

# --- instrumentation scope ---------------------------------------------------------------
SCOPE = "o11ylab"

# --- notebook / cell (o11ylab extension) ---------------------------------------------------
CELL_SPAN_PREFIX = "cell"
CELL_ID = "jupyter.cell.id"
CELL_EXECUTION_COUNT = "jupyter.cell.execution_count"
CELL_SOURCE_SHA256 = "jupyter.cell.source.sha256"
CELL_SOURCE = "jupyter.cell.source"  # only with content capture on
CELL_AUTOTRACED = "jupyter.cell.autotraced"
NOTEBOOK_PATH = "jupyter.notebook.path"
KERNEL_ID = "jupyter.kernel.id"

# Roll-ups onto a cell span of everything that ran under it (o11ylab extension).
CELL_SPAN_COUNT = "o11ylab.cell.span_count"
CELL_ERROR_COUNT = "o11ylab.cell.error_count"

# --- batch runs (o11ylab extension) ---------------------------------------------------------
RUN_SPAN = "o11ylab run"
NOTEBOOK_SPAN_PREFIX = "notebook"
RUN_ID = "o11ylab.run.id"
RUN_NOTEBOOK_COUNT = "o11ylab.run.notebook_count"
NOTEBOOK_STATUS = "o11ylab.notebook.status"
NOTEBOOK_METADATA_KEY = "o11ylab"  # key in the executed notebook's metadata

# --- general ---------------------------------------------------------------------------------
ERROR_TYPE = "error.type"
SERVICE_NAME_DEFAULT = "o11ylab"

# --- metrics of the extension itself ----------------------------------------------------------
METRIC_CELL_DURATION = "o11ylab.cell.duration"  # histogram, s, attrs: status
METRIC_CELLS = "o11ylab.cells"  # counter, {cell}, attrs: status
METRIC_SPANS_EXPORTED = "o11ylab.telemetry.spans.exported"  # counter, attrs: exporter
METRIC_SPANS_FAILED = "o11ylab.telemetry.spans.failed"  # counter, attrs: exporter
STATUS = "status"  # "ok" / "error" on the metrics above
EXPORTER = "exporter"

# --- GenAI (semantic conventions, development status) ----------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"

# Cost (extension, aligned with the open gen_ai.usage.cost proposal). USD.
GEN_AI_USAGE_COST = "gen_ai.usage.cost"
CELL_INPUT_TOKENS = "o11ylab.cell.input_tokens"
CELL_OUTPUT_TOKENS = "o11ylab.cell.output_tokens"
CELL_COST = "o11ylab.cell.cost_usd"

# Which child spans roll up onto their cell, and which of their attributes are summed into
# which cell attribute. Only operation spans count, so a workflow span that repeats its
# children's totals is not counted twice.
ROLLUP_OPERATIONS = frozenset({"chat", "embeddings", "text_completion", "generate_content"})
ROLLUP_SUMS = (
    (GEN_AI_USAGE_INPUT_TOKENS, CELL_INPUT_TOKENS),
    (GEN_AI_USAGE_OUTPUT_TOKENS, CELL_OUTPUT_TOKENS),
    (GEN_AI_USAGE_COST, CELL_COST),
)

# --- hardware (semantic conventions) -----------------------------------------------------------
HW_ENERGY_SPAN = "o11ylab.gpu.energy_joules"  # per-span GPU energy (extension)
CELL_GPU_ENERGY = "o11ylab.cell.gpu.energy_joules"
CELL_GPU_MEMORY_PEAK = "o11ylab.cell.gpu.memory.peak_bytes"
