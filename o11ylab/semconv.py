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
METRIC_CELL_DURATION = "o11ylab.cell.duration"  # histogram, s, attrs: status; its count: cells
STATUS = "status"  # "ok" / "error" on the metrics above

# --- GenAI (semantic conventions, development status) ----------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"

# Cost (extension, aligned with the open gen_ai.usage.cost.* proposal,
# open-telemetry/semantic-conventions-genai#443: amount + currency + source). USD. The amount
# cannot be called plain "gen_ai.usage.cost": a name may not be both an attribute and a namespace.
GEN_AI_USAGE_COST = "gen_ai.usage.cost.amount"
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

# --- chat, embeddings, cost and the RAG pipeline (o11ylab/ai/, o11ylab/pricing.py) -------------
# The OpenAI instrumentation names its own spans and metrics; these are the ones o11ylab adds.
CHAT_OPERATION = "chat"
EMBEDDINGS_OPERATION = "embeddings"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_EMBEDDINGS_DIMENSION_COUNT = "gen_ai.embeddings.dimension.count"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_REQUEST_RESEND_COUNT = "http.request.resend_count"  # retries the SDK made (HTTP semconv)
RETRY_EVENT = "o11ylab.http.retry"  # span event per SDK retry (extension), with the two above
# Proposal attributes next to the amount (see GEN_AI_USAGE_COST above).
GEN_AI_USAGE_COST_CURRENCY = "gen_ai.usage.cost.currency"  # ISO 4217, always "USD" here
GEN_AI_USAGE_COST_SOURCE = "gen_ai.usage.cost.source"  # "local": computed by o11ylab
COST_SOURCE_COMPUTED = "local"  # the proposal's value for "the recorder computed it"
# o11ylab extension: the parts of the amount, the price table used, and "no price known".
COST_INPUT = "o11ylab.cost.input_amount"
COST_CACHED_INPUT = "o11ylab.cost.cached_input_amount"
COST_OUTPUT = "o11ylab.cost.output_amount"
COST_UNKNOWN = "o11ylab.cost.unknown"  # true when the model has no price: no amount is set
COST_PRICED_AS = "o11ylab.cost.priced_as"  # the price-table entry used (model, or "local")
PRICING_VERSION = "o11ylab.pricing.version"
# Cost metric (extension; counter, USD, attrs: operation, provider, request/response model).
METRIC_GEN_AI_COST = "o11ylab.gen_ai.client.cost"
# The RAG pipeline: a GenAI workflow span (opentelemetry-util-genai's invoke_workflow, which
# still emits gen_ai.workflow.name) over one child span per stage: embeddings, retrieval,
# "rag prompt", chat. The workflow span sums its operations' tokens and cost; roll-ups skip it.
WORKFLOW_OPERATION = "invoke_workflow"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
RAG_WORKFLOW_NAME = "rag"
RAG_STAGE_SPAN_PREFIX = "rag"  # "rag prompt" (the stage with no GenAI span), "rag index"
RAG_SOURCE_IDS = "o11ylab.rag.source_ids"
RAG_SOURCE_COUNT = "o11ylab.rag.source_count"
RAG_PROMPT_CHARS = "o11ylab.rag.prompt.chars"
RAG_CONTEXT_DOCUMENTS = "o11ylab.rag.context.documents"


# --- hardware: sampler metrics and per-span attribution (o11ylab/hardware/) -----------------
# Metric names and units follow the hardware (hw.*), OS process (process.*) and system
# (system.*) semantic conventions, all in development status. Utilizations are fractions (0..1).
HW_TYPE = "hw.type"
HW_TYPE_GPU = "gpu"
HW_ID = "hw.id"  # the GPU's UUID: unique on the host, stable across reboots
HW_NAME = "hw.name"  # "gpu0", "gpu1", ... in NVML order
HW_MODEL = "hw.model"  # "NVIDIA H100 80GB HBM3"
HW_VENDOR = "hw.vendor"
HW_VENDOR_NVIDIA = "NVIDIA"
HW_DRIVER_VERSION = "hw.driver_version"
HW_GPU_TASK = "hw.gpu.task"
HW_GPU_TASK_GENERAL = "general"
METRIC_HW_GPU_UTILIZATION = "hw.gpu.utilization"  # gauge, 1, attrs: hw.gpu.task
METRIC_HW_GPU_MEMORY_USAGE = "hw.gpu.memory.usage"  # updowncounter, By
METRIC_HW_GPU_MEMORY_LIMIT = "hw.gpu.memory.limit"  # updowncounter, By
METRIC_HW_GPU_MEMORY_UTILIZATION = "hw.gpu.memory.utilization"  # gauge, 1: used / limit
METRIC_HW_POWER = "hw.power"  # gauge, W
METRIC_HW_ENERGY = "hw.energy"  # counter, J
METRIC_HW_TEMPERATURE = "hw.temperature"  # gauge, Cel
METRIC_PROCESS_CPU_TIME = "process.cpu.time"  # counter, s, attrs: cpu.mode
METRIC_PROCESS_CPU_UTILIZATION = "process.cpu.utilization"  # gauge, 1 (of the CPUs it may use)
METRIC_PROCESS_MEMORY_USAGE = "process.memory.usage"  # updowncounter, By (resident)
METRIC_PROCESS_MEMORY_VIRTUAL = "process.memory.virtual"  # updowncounter, By
METRIC_SYSTEM_CPU_UTILIZATION = "system.cpu.utilization"  # gauge, 1 (all CPUs)
METRIC_SYSTEM_MEMORY_USAGE = "system.memory.usage"  # updowncounter, By, attrs: state
METRIC_SYSTEM_MEMORY_LIMIT = "system.memory.limit"  # updowncounter, By
METRIC_SYSTEM_MEMORY_UTILIZATION = "system.memory.utilization"  # gauge, 1
CPU_MODE = "cpu.mode"  # "user" / "system"
SYSTEM_MEMORY_STATE = "system.memory.state"  # "used" / "free" / "cached" / "buffers"
# Per-span attribution (o11ylab extension) on GenAI operation spans: any span that starts with
# gen_ai.operation.name, or whose name starts with one of these operations. HW_ENERGY_SPAN
# above holds the joules.
ATTRIBUTED_OPERATIONS = frozenset(
    {"chat", "embeddings", "retrieval", "text_completion", "generate_content"}
)
GPU_ENERGY_SOURCE = "o11ylab.gpu.energy.source"  # "power" (integral); absent: NVML's mJ counter
GPU_MEMORY_PEAK_SPAN = "o11ylab.gpu.memory.peak_bytes"
GPU_MEMORY_PEAK_SOURCE = "o11ylab.gpu.memory.peak_source"  # "nvml" (whole device); absent: torch
GPU_UTILIZATION_MEAN_SPAN = "o11ylab.gpu.utilization.mean"  # 0..1, mean over the span
GPU_ENERGY_PER_OUTPUT_TOKEN = "o11ylab.gpu.energy_per_output_token"  # J per output token
GPU_COUNT = "o11ylab.gpu.count"  # GPUs the numbers cover, when more than one
PROCESS_CPU_SECONDS_SPAN = "o11ylab.process.cpu_seconds"  # user + system, whole process
# The same on cell spans, next to CELL_GPU_ENERGY and CELL_GPU_MEMORY_PEAK above.
CELL_GPU_UTILIZATION_MEAN = "o11ylab.cell.gpu.utilization.mean"
CELL_PROCESS_CPU_SECONDS = "o11ylab.cell.process.cpu_seconds"
CELL_PROCESS_MEMORY_PEAK = "o11ylab.cell.process.memory.peak_bytes"  # resident, sampled
# How good a span's (or cell's) GPU joules are (o11ylab/hardware/_energy.py), on spans and cells
# alike. Method: "counter_delta" (NVML's counter at start and end), "instant_power" (shorter than
# the counter's period: mean NVML_FI_DEV_POWER_INSTANT at start and end x duration),
# "power_samples" (no counter: the sampler's power readings integrated), "mixed" (GPUs measured
# differently), "too_short" (shorter than the counter's period, no instant power: no joules).
GPU_ENERGY_METHOD = "o11ylab.gpu.energy.method"
GPU_ENERGY_COUNTER_PERIOD = "o11ylab.gpu.energy.counter_period_s"  # measured update period, s
# True when spans in other threads or asyncio tasks were measured on the same GPU meanwhile: the
# joules are then the device's energy over this span's window, not a share of it.
GPU_ENERGY_SHARED = "o11ylab.gpu.energy.shared"

# --- vector store on Chroma (o11ylab/ai/vectorstore/) -------------------------------------------
# Searches are GenAI `retrieval` spans ("retrieval {collection}"); writes are database-style spans
# ("add {collection}", "upsert {collection}", "delete {collection}", "get {collection}").
# gen_ai.retrieval.top_k (an int) replaced gen_ai.request.top_k on retrieval spans
# (semantic-conventions-genai#217); opentelemetry-util-genai 1.3b0 emits the same name.
RETRIEVAL_OPERATION = "retrieval"
GEN_AI_DATA_SOURCE_ID = "gen_ai.data_source.id"  # the collection name
GEN_AI_RETRIEVAL_TOP_K = "gen_ai.retrieval.top_k"
GEN_AI_RETRIEVAL_QUERY_TEXT = "gen_ai.retrieval.query.text"  # only with content capture on
# JSON list of {"id", "score", "content"}, per the retrieval-documents schema; content capture on.
GEN_AI_RETRIEVAL_DOCUMENTS = "gen_ai.retrieval.documents"
DB_SYSTEM_NAME = "db.system.name"
DB_SYSTEM_CHROMA = "chromadb"  # Chroma has no registered db.system.name value yet
DB_COLLECTION_NAME = "db.collection.name"
DB_OPERATION_NAME = "db.operation.name"  # add / upsert / delete / get spans; "query" on the metric
DB_OPERATION_BATCH_SIZE = "db.operation.batch.size"  # queries in one retrieval call, only when > 1
DB_RESPONSE_RETURNED_ROWS = "db.response.returned_rows"  # hits (retrieval) or records (get)
VECTORSTORE_RECORD_COUNT = "o11ylab.vectorstore.record_count"  # records added/upserted/deleted
# Metrics. Retrieval duration goes into METRIC_GEN_AI_CLIENT_OPERATION_DURATION (defined with
# the local-model names below; gen_ai.operation.name=retrieval, db.system.name,
# db.collection.name, error.type on failure); hits per retrieval call are on the span only (the
# db.client.response.returned_rows histogram is opt-in in the conventions).

# --- chromadb instrumentor ---
# o11ylab/instrumentation/chromadb.py makes the spans and metrics above for any Chroma collection.

# --- local models and the local endpoint (o11ylab/ai/local_model/, o11ylab/serve/) -------
# In-process generation and embeddings follow the GenAI inference / embeddings span conventions
# with span kind INTERNAL (the conventions allow it for a model running in the same process).
# The provider value is o11ylab's own (no upstream value covers a local transformers model).
PROVIDER_LOCAL = "o11ylab.local"
TEXT_COMPLETION_OPERATION = "text_completion"  # a plain prompt; chat messages use CHAT_OPERATION
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_TOP_K = (
    "gen_ai.request.top_k"  # a sampling parameter (retrieval uses .retrieval.top_k)
)
GEN_AI_REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"  # num_return_sequences, when > 1
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_OUTPUT_TYPE = "gen_ai.output.type"  # "text"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"  # JSON, only with content capture on spans
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"  # JSON, only with content capture on spans
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"  # "input" / "output" on METRIC_GEN_AI_CLIENT_TOKEN_USAGE
# A local model produces every answer token by token, so a chunk is a token: every local
# generation carries GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK (above) on its span; the two chunk
# metrics below are recorded for streamed generations only, as the conventions ask.
METRIC_GEN_AI_CLIENT_OPERATION_DURATION = "gen_ai.client.operation.duration"  # histogram, s
METRIC_GEN_AI_CLIENT_TOKEN_USAGE = "gen_ai.client.token.usage"  # histogram, {token}
METRIC_GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"  # s
METRIC_GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK = "gen_ai.client.operation.time_per_output_chunk"  # s
# o11ylab extension: what ran the model and how fast.
LOCAL_MODEL_DEVICE = "o11ylab.model.device"  # "cpu", "cuda:0"
LOCAL_MODEL_DTYPE = "o11ylab.model.dtype"  # "float32", "bfloat16"
LOCAL_MODEL_CONTEXT_WINDOW = "o11ylab.model.context_window"  # tokens
LOCAL_OUTPUT_TOKENS_PER_SECOND = "o11ylab.gen_ai.output_tokens_per_second"
LOCAL_QUEUE_TIME = "o11ylab.gen_ai.queue_time"  # s waited for the model's lock
LOCAL_BATCH_SIZE = "o11ylab.gen_ai.batch_size"  # prompts generated (requests encoded) together
# The endpoint (`o11ylab serve`): one SERVER span per HTTP request, continuing the caller's
# trace from `traceparent`, with the GenAI model-server metrics.
SERVE_SERVICE_NAME = "o11ylab-serve"  # service.name of the serve process unless OTEL_SERVICE_NAME
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
CLIENT_ADDRESS = "client.address"
METRIC_GEN_AI_SERVER_REQUEST_DURATION = "gen_ai.server.request.duration"  # histogram, s
METRIC_GEN_AI_SERVER_TIME_TO_FIRST_TOKEN = "gen_ai.server.time_to_first_token"  # histogram, s
METRIC_GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN = "gen_ai.server.time_per_output_token"  # histogram, s

# --- pricing (o11ylab/pricing.py: genai-prices, the O11YLAB_PRICING_FILE override, local) ------
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS = "gen_ai.usage.cache_write.input_tokens"  # util-genai 1.3
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
# Values of GEN_AI_USAGE_COST_SOURCE: which price source costed the span.
COST_SOURCE_GENAI_PRICES = "genai-prices"  # the genai-prices package's bundled, dated data
COST_SOURCE_OVERRIDE = "override"  # the user's O11YLAB_PRICING_FILE
COST_SOURCE_LOCAL = "local"  # a model o11ylab runs itself: 0 USD
COST_CACHE_CREATION = "o11ylab.cost.cache_creation_amount"  # set when cache writes were priced
PRICING_FILE = "o11ylab.pricing.file"  # the override file that priced the span
# True on a GenAI span (a langchain "chat", say) whose descendant GenAI span already carries the
# usage of the same call: it is not costed, and roll-ups should skip its tokens too.
USAGE_COUNTED_BELOW = "o11ylab.usage.counted_below"

# `o11ylab run` on Dask: one span per task on the runner, parent of the notebook span a worker
# opens (retries of a task sit under the same task span).
RUN_TASK_SPAN_PREFIX = "task"
RUN_TASK_PARAMETERS = "o11ylab.run.task.parameters"  # JSON object of the swept parameters
RUN_TASK_WORKER = "o11ylab.run.task.worker"  # the Dask worker address that finished it
RUN_TASK_ATTEMPTS = "o11ylab.run.task.attempts"
RUN_TASK_STATUS = "o11ylab.run.task.status"
