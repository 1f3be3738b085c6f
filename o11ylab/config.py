"""Every setting o11ylab reads, in one place.

Values come from three layers, the later winning: built-in defaults, environment variables
(the standard ``OTEL_*`` ones plus ``O11YLAB_*``), and traitlets options
(``c.O11yLab.prometheus_port = 9500`` in ``ipython_config.py``). ``Settings`` is the only
object the rest of the package reads; it holds no secrets (OTLP headers stay in the
environment, where the OTLP exporters read them).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

from traitlets import Bool, Int, Unicode
from traitlets.config import Configurable

from .errors import O11yLabError

__all__ = [
    "AllSettings",
    "ChromaSettings",
    "ConfigError",
    "ContentCapture",
    "HardwareSettings",
    "InstrumentationSettings",
    "ModelsSettings",
    "O11yLab",
    "OpenAISettings",
    "RunConfig",
    "ServeSettings",
    "Settings",
    "TelemetryExtras",
    "load_all",
    "load_chroma",
    "load_hardware",
    "load_instrumentation",
    "load_models",
    "load_openai",
    "load_run",
    "load_serve",
    "load_settings",
    "load_telemetry",
    "openai_configured",
    "pricing_file",
]


class ConfigError(O11yLabError, ValueError):
    """A setting has a value o11ylab cannot use. The message names the setting and the fix."""


class ContentCapture(enum.Enum):
    """Where prompt, completion, document and cell text may be recorded (GenAI convention)."""

    NO_CONTENT = "NO_CONTENT"
    SPAN_ONLY = "SPAN_ONLY"
    EVENT_ONLY = "EVENT_ONLY"
    SPAN_AND_EVENT = "SPAN_AND_EVENT"

    @property
    def on_spans(self) -> bool:
        return self in (ContentCapture.SPAN_ONLY, ContentCapture.SPAN_AND_EVENT)


PROTOCOLS = ("http/protobuf", "grpc")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)  # those the SDK builds itself
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token
# Printable ASCII but for " , ; and \ : what the OTLP exporters' header parser takes as a value.
_HEADER_VALUE = re.compile(r'[^\x00-\x1f\x7f-\U0010ffff",;\\]*')
SIGNALS = ("traces", "metrics", "logs")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclasses.dataclass(frozen=True)
class Settings:
    runs_dir: Path
    run_dir: Path | None
    trace_file: bool
    otlp_signals: tuple[str, ...]
    otlp_protocol: dict[str, str]
    export_timeout_s: float
    prometheus_host: str
    prometheus_port: int
    metric_interval_ms: int
    buffer_spans: int
    autotrace: bool
    summary: bool
    capture_content: ContentCapture
    log_level: str
    traceparent: str | None
    notebook_path: str | None
    # With no OPENAI_API_KEY / OPENAI_BASE_URL, point the openai SDK at the local endpoint.
    local_openai: bool = True

    @property
    def otlp_enabled(self) -> bool:
        return bool(self.otlp_signals)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value: use 1/0, true/false or on/off.")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number.") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range: use {low}..{high}.")
    return value


def _endpoint(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        parsed = urlparse(raw)
        usable = parsed.scheme in ("http", "https") and bool(parsed.hostname)
    except ValueError:  # an unclosed [IPv6 bracket, a host that changes under NFKC
        usable = False
    if not usable:
        # Never echo the value: people paste URLs with tokens in them.
        raise ConfigError(
            f"{name} is not an http(s) URL with a host: set it like http://127.0.0.1:4318."
        )
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{name} has a port that is not a number in 0..65535.") from None
    if parsed.query:
        # The SDK's retry warnings print the URL with its query (urllib3's own message), so a
        # key there would reach stderr, the serve log and `o11ylab run` output.
        raise ConfigError(
            f"{name} has a query string (not shown: it may hold a key), which the exporters' "
            "warnings would print. Pass credentials as headers instead, e.g. "
            "OTEL_EXPORTER_OTLP_HEADERS=api-key=..., and drop the '?...' part."
        )
    return raw


def _folder(name: str, raw: str) -> Path:
    try:
        return Path(raw).expanduser()
    except RuntimeError:  # ~someone, and no such user
        raise ConfigError(f"{name}={raw!r}: no such home folder; use an absolute path.") from None


def _timeout_seconds(env: Mapping[str, str]) -> float:
    # The spec says milliseconds; opentelemetry-python reads this variable as seconds. We
    # follow the SDK the user's exporters run on, so one value means one thing everywhere.
    raw = env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    if raw is None or not raw.strip():
        return 2.0
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_TIMEOUT={raw!r} is not a number of seconds."
        ) from None
    if not 0 < value <= 600:
        raise ConfigError("OTEL_EXPORTER_OTLP_TIMEOUT must be between 0 and 600 seconds.")
    return value


def _capture(env: Mapping[str, str]) -> ContentCapture:
    raw = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip()
    if not raw:
        return ContentCapture.NO_CONTENT
    upper = raw.upper()
    # The OpenAI instrumentation also accepts true/false; keep the two in step.
    if upper in ("TRUE", "1"):
        return ContentCapture.SPAN_ONLY
    if upper in ("FALSE", "0"):
        return ContentCapture.NO_CONTENT
    try:
        return ContentCapture(upper)
    except ValueError:
        allowed = ", ".join(c.value for c in ContentCapture)
        raise ConfigError(
            f"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT={raw!r} is not one of {allowed}."
        ) from None


def content_capture(env: Mapping[str, str] | None = None) -> ContentCapture:
    """Where GenAI content may go, from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.

    For instrumentors, which must work without o11ylab's telemetry (``opentelemetry-instrument``);
    a value o11ylab cannot read means no content, never more than asked for.
    """
    try:
        return _capture(os.environ if env is None else env)
    except ConfigError:
        return ContentCapture.NO_CONTENT


def _check_headers(env: Mapping[str, str], signal: str) -> None:
    """Refuse OTLP headers the exporters would drop: they log a dropped header, secret and all,
    and then export without it (so without its credentials). The value is never echoed."""
    name = f"OTEL_EXPORTER_OTLP_{signal}_HEADERS"
    if not env.get(name):
        name = "OTEL_EXPORTER_OTLP_HEADERS"  # the exporters' fallback, as they read it
    raw = env.get(name) or ""
    items = [item.strip() for item in re.split(r"[ \t]*,[ \t]*", raw)]
    for position, item in enumerate((i for i in items if i), start=1):
        key, equals, value = item.partition("=")
        value = value.strip(" \t")
        # Values are URL-encoded (%20 for a space); a value with a bare space is sent as is.
        sent = value if " " in value else unquote(value)
        if (
            not equals
            or not _HEADER_NAME.fullmatch(key.strip(" \t"))
            or not _HEADER_VALUE.fullmatch(value)
            or not sent.isprintable()
        ):
            raise ConfigError(
                f"{name}: header {position} is not name=value with a URL-encoded value (it is "
                "not shown: it may hold a secret). Write it like "
                "Authorization=Basic%20dXNlcjp0b2tlbg==,x-scope=team."
            )


def _check_sampler(env: Mapping[str, str]) -> None:
    """The SDK's TracerProvider reads these itself, and for a value it cannot use it logs a
    warning and samples everything; refuse such a value here, with one clear line."""
    raw = env.get("OTEL_TRACES_SAMPLER")
    if raw is None:
        return
    sampler = raw.lower()  # as the SDK reads it: any case, but spaces count
    if sampler not in SAMPLERS:
        raise ConfigError(
            f"OTEL_TRACES_SAMPLER={raw!r} is not a sampler the OpenTelemetry SDK knows: use one "
            f"of {', '.join(SAMPLERS)}, or unset it (parentbased_always_on)."
        )
    if sampler.endswith("traceidratio"):
        arg = env.get("OTEL_TRACES_SAMPLER_ARG", "")
        try:
            ratio = float(arg)
        except ValueError:
            ratio = math.nan
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(
                f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a sampling probability: with "
                f"OTEL_TRACES_SAMPLER={raw} set it to a number in 0..1, such as 0.1."
            )


def _otlp(env: Mapping[str, str]) -> tuple[tuple[str, ...], dict[str, str]]:
    common = _endpoint(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    signals: list[str] = []
    protocols: dict[str, str] = {}
    for signal in SIGNALS:
        upper = signal.upper()
        exporter = env.get(f"OTEL_{upper}_EXPORTER", "otlp").strip().lower()
        specific = _endpoint(env, f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")
        if exporter == "none" or not (common or specific):
            continue
        if exporter not in ("otlp", "console"):
            raise ConfigError(
                f"OTEL_{upper}_EXPORTER={exporter!r} is not supported here: use otlp or none."
            )
        protocol_variable = f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"
        if protocol_variable not in env:
            protocol_variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
        protocol = env.get(protocol_variable, "http/protobuf").strip()
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"{protocol_variable}={protocol!r} is not supported: use one of "
                f"{', '.join(PROTOCOLS)}."
            )
        _check_headers(env, upper)
        signals.append(signal)
        protocols[signal] = protocol
    return tuple(signals), protocols


def _level(env: Mapping[str, str]) -> str:
    raw = env.get("O11YLAB_LOG_LEVEL", "INFO").strip().upper()
    if raw not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"O11YLAB_LOG_LEVEL={raw!r} is not a logging level such as INFO.")
    return raw


def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
) -> Settings:
    """Build the settings from ``env`` (default ``os.environ``) and traitlets overrides."""
    env = os.environ if env is None else env
    signals, protocols = _otlp(env)
    _check_sampler(env)
    host = env.get("O11YLAB_PROMETHEUS_HOST", "127.0.0.1").strip() or "127.0.0.1"
    run_dir = env.get("O11YLAB_RUN_DIR", "").strip()
    values: dict[str, object] = {
        "runs_dir": _folder(
            "O11YLAB_RUNS_DIR", env.get("O11YLAB_RUNS_DIR", "").strip() or "~/.o11ylab/runs"
        ),
        "run_dir": _folder("O11YLAB_RUN_DIR", run_dir) if run_dir else None,
        "trace_file": _flag(env, "O11YLAB_TRACE_FILE", True),
        "otlp_signals": signals,
        "otlp_protocol": protocols,
        "export_timeout_s": _timeout_seconds(env),
        "prometheus_host": host,
        "prometheus_port": _int(env, "O11YLAB_PROMETHEUS_PORT", 9464, 0, 65535),
        "metric_interval_ms": _int(env, "OTEL_METRIC_EXPORT_INTERVAL", 10_000, 100, 3_600_000),
        "buffer_spans": _int(env, "O11YLAB_BUFFER_SPANS", 10_000, 10, 10_000_000),
        "autotrace": _flag(env, "O11YLAB_AUTOTRACE", False),
        "summary": _flag(env, "O11YLAB_SUMMARY", True),
        "capture_content": _capture(env),
        "local_openai": _flag(env, "O11YLAB_LOCAL_OPENAI", True),
        "log_level": _level(env),
        "traceparent": env.get("TRACEPARENT", "").strip() or None,
        "notebook_path": (
            env.get("O11YLAB_NOTEBOOK", "").strip()
            or env.get("JPY_SESSION_NAME", "").strip()
            or None
        ),
    }
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in values:
            raise ConfigError(f"Unknown o11ylab setting {key!r}.")
        if key in ("runs_dir", "run_dir"):
            value = _folder(f"O11yLab.{key}", str(value))
        values[key] = value
    if not 0 <= int(values["prometheus_port"]) <= 65535:  # type: ignore[call-overload]
        raise ConfigError("O11yLab.prometheus_port must be in 0..65535 (0 turns /metrics off).")
    return Settings(**values)  # type: ignore[arg-type]


# --- sections --------------------------------------------------------------------------------
# One frozen dataclass per area and one loader each, ``load_<area>(env=None)``, reading
# ``os.environ`` when ``env`` is None. No other module reads the environment for a setting.

# --- section: hardware (O11YLAB_HARDWARE*, O11YLAB_NVML, O11YLAB_TORCH_PEAK, CUDA_VISIBLE_DEVICES)
HARDWARE_MIN_INTERVAL_S = 1 / 6  # NVML's shortest averaging window: sampling faster adds nothing
HARDWARE_MAX_INTERVAL_S = 60.0


@dataclasses.dataclass(frozen=True)
class HardwareSettings:
    """The hardware sampler's settings (o11ylab.hardware); the defaults are a plain kernel's."""

    enabled: bool = True
    interval_s: float = 1.0
    history: int = 600
    nvml: bool = True
    torch_peak: bool = True
    # CUDA's own variable, read once here: None (unset) means every GPU, "" means none.
    cuda_visible_devices: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HardwareSettings:
        """The same as ``load_hardware(env)``; kept for callers of the old hardware module."""
        return load_hardware(env)


def clamp_hardware_interval(seconds: float) -> float:
    return min(max(float(seconds), HARDWARE_MIN_INTERVAL_S), HARDWARE_MAX_INTERVAL_S)


def load_hardware(env: Mapping[str, str] | None = None) -> HardwareSettings:
    env = os.environ if env is None else env

    def flag(name: str, default: bool) -> bool:
        # Blank means unset here (the hardware module always read it so), not "off" as in _flag.
        return _flag(env, name, default) if env.get(name, "").strip() else default

    raw_interval = env.get("O11YLAB_HARDWARE_INTERVAL", "").strip()
    try:
        interval = float(raw_interval) if raw_interval else 1.0
    except ValueError:
        raise ConfigError(
            f"O11YLAB_HARDWARE_INTERVAL={raw_interval!r} is not a number of seconds."
        ) from None
    if not interval > 0:  # also refuses nan
        raise ConfigError("O11YLAB_HARDWARE_INTERVAL must be more than 0 seconds.")
    return HardwareSettings(
        enabled=flag("O11YLAB_HARDWARE", True),
        interval_s=clamp_hardware_interval(interval),
        history=_int(env, "O11YLAB_HARDWARE_HISTORY", 600, 10, 1_000_000),
        nvml=flag("O11YLAB_NVML", True),
        torch_peak=flag("O11YLAB_TORCH_PEAK", True),
        cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
    )


# --- section: serve (O11YLAB_SERVE_*, O11YLAB_LOCAL_ENDPOINT)
@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """What ``o11ylab serve`` and the endpoint launcher read from the environment."""

    api_key: str | None  # O11YLAB_SERVE_API_KEY: the key of `o11ylab serve` (never printed)
    max_body_mb: float  # O11YLAB_SERVE_MAX_BODY_MB: largest request body read; 0 for no limit
    max_queue: int  # O11YLAB_SERVE_MAX_QUEUE: generations waiting or running before a 503
    start_timeout_s: float  # O11YLAB_SERVE_START_TIMEOUT: an auto-started endpoint's load time
    local_endpoint: str | None  # O11YLAB_LOCAL_ENDPOINT: a shared `o11ylab serve` to reuse
    # O11YLAB_SERVE_TORCH_THREADS: torch's intra-op threads in `o11ylab serve`; None: torch's
    # own choice (OMP_NUM_THREADS, else one per core)
    torch_threads: int | None


SERVE_DEFAULT_MAX_BODY_MB = 8.0  # a whole 8k-token chat is ~40 kB; 2,048 long inputs fit in 8 MB
# Past this many a client is told to come back (503 with Retry-After) rather than wait behind
# all of them. 64 turned away 17% of the load test's 200 simultaneous users, which the tiny
# model serves in about 5 s; 256 holds them and still bounds the wait (80 queued generations of
# SmolLM2 are minutes of CPU work: set it lower for a big model).
SERVE_DEFAULT_MAX_QUEUE = 256


def _float_in(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails too
        raise ConfigError(f"{name}={raw!r} is not a number in {low:g}..{high:g}.")
    return value


def _serve_torch_threads(env: Mapping[str, str]) -> int | None:
    """Unset: one thread fewer than the CPUs this process may use (at least one), unless
    OMP_NUM_THREADS says otherwise; 0: torch's own choice. Under load the server's own threads
    (event loop, HTTP, tokenizing, telemetry: ~3 ms of CPU a request, beside the model's)
    need a core, and torch's default of one thread per core competed with them. On 2 shared
    cores (bench_serve_throughput, tiny model, 16 tokens, both in one run) 1 thread against 2
    served 1 client as fast (53 / 53 req/s), 10 clients 27% faster (160 / 126) and 50 clients
    14% faster (217 / 191); SmolLM2 with a 150-word prompt, 1 client 0.8 / 0.7 req/s, 10
    clients 0.9 / 0.8."""
    raw = env.get("O11YLAB_SERVE_TORCH_THREADS", "").strip()
    if raw:
        chosen = _int(env, "O11YLAB_SERVE_TORCH_THREADS", 0, 0, 1024)
        return chosen or None
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


def load_serve(env: Mapping[str, str] | None = None) -> ServeSettings:
    env = os.environ if env is None else env
    return ServeSettings(
        api_key=env.get("O11YLAB_SERVE_API_KEY", "").strip() or None,
        max_body_mb=_float_in(env, "O11YLAB_SERVE_MAX_BODY_MB", SERVE_DEFAULT_MAX_BODY_MB, 0, 1024),
        max_queue=_int(env, "O11YLAB_SERVE_MAX_QUEUE", SERVE_DEFAULT_MAX_QUEUE, 1, 100_000),
        start_timeout_s=_float_in(env, "O11YLAB_SERVE_START_TIMEOUT", 120.0, 1, 3600),
        local_endpoint=env.get("O11YLAB_LOCAL_ENDPOINT", "").strip() or None,
        torch_threads=_serve_torch_threads(env),
    )


# --- section: openai (OPENAI_*, the chat and embedding model names the client uses)


@dataclasses.dataclass(frozen=True)
class OpenAISettings:
    """Where ``o11ylab.ai``'s openai clients go, and how patiently. The two keys are credentials:
    out of ``repr()``, never printed; the client sends them and nothing else reads them."""

    api_key: str = dataclasses.field(default="", repr=False)  # OPENAI_API_KEY
    base_url: str = ""  # OPENAI_BASE_URL; checked where it is used, without echoing it
    timeout_s: float = 60.0  # O11YLAB_OPENAI_TIMEOUT
    max_retries: int = 2  # O11YLAB_OPENAI_MAX_RETRIES
    chat_model: str | None = None  # O11YLAB_CHAT_MODEL
    embedding_model: str | None = None  # O11YLAB_EMBEDDING_MODEL
    # O11YLAB_SERVE_API_KEY: what the local endpoint (`o11ylab serve`) wants from its clients.
    local_api_key: str = dataclasses.field(default="", repr=False)


def openai_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether OPENAI_API_KEY or OPENAI_BASE_URL names an endpoint: then o11ylab starts no
    local one (not in a kernel, not for a run)."""
    env = os.environ if env is None else env
    return any(env.get(name, "").strip() for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"))


def _openai_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds.") from None
    if not 0 < value <= 3600:
        raise ConfigError(f"{name}={raw} is out of range: use more than 0 and at most 3600 s.")
    return value


def load_openai(env: Mapping[str, str] | None = None) -> OpenAISettings:
    """The openai section from ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    return OpenAISettings(
        api_key=env.get("OPENAI_API_KEY", "").strip(),
        base_url=env.get("OPENAI_BASE_URL", "").strip(),
        timeout_s=_openai_seconds(env, "O11YLAB_OPENAI_TIMEOUT", 60.0),
        max_retries=_int(env, "O11YLAB_OPENAI_MAX_RETRIES", 2, 0, 20),
        chat_model=env.get("O11YLAB_CHAT_MODEL", "").strip() or None,
        embedding_model=env.get("O11YLAB_EMBEDDING_MODEL", "").strip() or None,
        local_api_key=env.get("O11YLAB_SERVE_API_KEY", "").strip(),
    )


# --- section: chroma (CHROMA_*)


@dataclasses.dataclass(frozen=True)
class ChromaSettings:
    """Where ``VectorStore`` keeps its vectors. Chroma reads its own auth variables
    (``CHROMA_CLIENT_AUTH_CREDENTIALS`` ...) itself; they are not here."""

    path: Path  # CHROMA_PATH, default ~/.o11ylab/chroma: the local store's folder
    host: str | None  # CHROMA_HOST: a Chroma server instead of the folder
    port: int  # CHROMA_PORT, default 8000
    ssl: bool  # CHROMA_SSL: https to the server


def load_chroma(env: Mapping[str, str] | None = None) -> ChromaSettings:
    """The chroma section from ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    port = 8000
    raw_port = env.get("CHROMA_PORT", "").strip()
    if raw_port:
        try:
            port = int(raw_port)
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            raise ConfigError(f"CHROMA_PORT={raw_port!r} is not a port number (1..65535).")
    return ChromaSettings(
        path=_folder("CHROMA_PATH", env.get("CHROMA_PATH", "").strip() or "~/.o11ylab/chroma"),
        host=env.get("CHROMA_HOST", "").strip() or None,
        port=port,
        # Anything but a yes is no, as the store has always read it.
        ssl=env.get("CHROMA_SSL", "").strip().lower() in _TRUE,
    )


# --- section: models (LOCAL_MODEL_NAME, EMBEDDING_MODEL, O11YLAB_MODEL_CACHE, USE_GPU, GPU_DEVICE_ID)


@dataclasses.dataclass(frozen=True)
class ModelsSettings:
    """Which local models o11ylab loads, where it keeps them, and on which device."""

    chat_model: str | None  # LOCAL_MODEL_NAME: a folder or cached hub id; None: SmolLM2
    embedding_model: str | None  # EMBEDDING_MODEL; None: all-MiniLM-L6-v2
    cache_dir: Path  # O11YLAB_MODEL_CACHE, default ~/.cache/o11ylab/models
    use_gpu: bool | None  # USE_GPU: None (unset or auto) means CUDA when torch sees one
    gpu_device_id: int  # GPU_DEVICE_ID, default 0 (checked against the devices when used)


def load_models(env: Mapping[str, str] | None = None) -> ModelsSettings:
    """The models section from ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    raw_gpu = env.get("USE_GPU", "").strip().lower()
    use_gpu: bool | None = None
    if raw_gpu in ("0", "false", "no", "off"):
        use_gpu = False
    elif raw_gpu in ("1", "true", "yes", "on"):
        use_gpu = True
    elif raw_gpu not in ("", "auto"):
        raise ConfigError(f"USE_GPU={raw_gpu!r} is not a yes/no value: use 1, 0 or leave it unset.")
    raw_id = env.get("GPU_DEVICE_ID", "0").strip() or "0"
    try:
        device_id = int(raw_id)
    except ValueError:
        raise ConfigError(f"GPU_DEVICE_ID={raw_id!r} is not a whole number.") from None
    cache = env.get("O11YLAB_MODEL_CACHE", "").strip()
    return ModelsSettings(
        chat_model=env.get("LOCAL_MODEL_NAME", "").strip() or None,
        embedding_model=env.get("EMBEDDING_MODEL", "").strip() or None,
        cache_dir=(
            _folder("O11YLAB_MODEL_CACHE", cache)
            if cache
            else Path.home() / ".cache" / "o11ylab" / "models"
        ),
        use_gpu=use_gpu,
        gpu_device_id=device_id,
    )


# --- section: run (what `o11ylab run` reads: DASK_SCHEDULER_ADDRESS, ...)
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What ``o11ylab run`` reads beside its options."""

    # DASK_SCHEDULER_ADDRESS, Dask's own variable: the cluster to run on when no --workers or
    # --scheduler is given (dask-gateway and dask-jobqueue set it for their clients too).
    scheduler_address: str | None
    # Seconds to reach the scheduler before giving up with one line naming it.
    connect_timeout_s: float
    # The user set O11YLAB_AUTOTRACE: the runner leaves it to them instead of turning it on.
    autotrace_set: bool
    # OPENAI_API_KEY or OPENAI_BASE_URL is set: no local endpoint is started for the run.
    openai_configured: bool
    # O11YLAB_SERVE_API_KEY: the key kernels present to the run's local endpoint, if any.
    serve_api_key: str | None
    # O11YLAB_PROMETHEUS_PORT is set: a worker's kernels keep it instead of serving no /metrics.
    prometheus_port_set: bool = False


def load_run(env: Mapping[str, str] | None = None) -> RunConfig:
    env = os.environ if env is None else env
    raw_timeout = env.get("O11YLAB_RUN_CONNECT_TIMEOUT", "").strip()
    try:
        timeout = float(raw_timeout) if raw_timeout else 10.0
    except ValueError:
        raise ConfigError(
            f"O11YLAB_RUN_CONNECT_TIMEOUT={raw_timeout!r} is not a number of seconds."
        ) from None
    if not 0 < timeout <= 3600:
        raise ConfigError("O11YLAB_RUN_CONNECT_TIMEOUT must be between 0 and 3600 seconds.")
    return RunConfig(
        scheduler_address=env.get("DASK_SCHEDULER_ADDRESS", "").strip() or None,
        connect_timeout_s=timeout,
        autotrace_set="O11YLAB_AUTOTRACE" in env,
        openai_configured=openai_configured(env),
        serve_api_key=env.get("O11YLAB_SERVE_API_KEY", "").strip() or None,
        prometheus_port_set="O11YLAB_PROMETHEUS_PORT" in env,
    )


# --- section: pricing and instrumentation (O11YLAB_PRICING_FILE, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS)
@dataclasses.dataclass(frozen=True)
class InstrumentationSettings:
    # Entry-point names OTEL_PYTHON_DISABLED_INSTRUMENTATIONS turns off ("*": all of them).
    disabled: frozenset[str] = frozenset()
    # The user's price overrides (O11YLAB_PRICING_FILE), as written: pricing resolves it.
    pricing_file: str | None = None


def load_instrumentation(env: Mapping[str, str] | None = None) -> InstrumentationSettings:
    """Read at each use, not cached: a notebook that edits these sees the change at once."""
    env = os.environ if env is None else env
    raw = env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return InstrumentationSettings(
        disabled=frozenset(part.strip() for part in raw.split(",") if part.strip()),
        pricing_file=pricing_file(env),
    )


def pricing_file(env: Mapping[str, str] | None = None) -> str | None:
    """O11YLAB_PRICING_FILE alone: what ``pricing.load_table`` reads, not the whole section.
    (The cost enricher asks whether it is set without calling this: see ``pricing._CostHook``.)"""
    value = (os.environ if env is None else env).get("O11YLAB_PRICING_FILE")
    return (value or "").strip() or None


# --- section: telemetry extras (what o11ylab.telemetry reads beside Settings)


@dataclasses.dataclass(frozen=True)
class TelemetryExtras:
    """What the telemetry reads beside ``Settings``: the OTLP endpoints, for display only
    (``%o11y status`` shows them through ``safe_url``; the OTLP exporters read their own)."""

    otlp_endpoint: str
    otlp_signal_endpoints: Mapping[str, str]
    # Lowest level exported from installed libraries' and the standard library's loggers
    # (httpx's "HTTP Request: POST ..." is INFO: one log record per call otherwise).
    library_log_level: str = "WARNING"
    # OTEL_SERVICE_NAME, or service.name in OTEL_RESOURCE_ATTRIBUTES: the SDK reads them itself;
    # o11ylab looks only to choose a default name (`o11ylab serve`) when the user gave none.
    service_name_set: bool = False


def load_telemetry(env: Mapping[str, str] | None = None) -> TelemetryExtras:
    env = os.environ if env is None else env
    specific = {
        signal: env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
        for signal in SIGNALS
    }
    level = env.get("O11YLAB_LIBRARY_LOG_LEVEL", "").strip().upper() or "WARNING"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(
            f"O11YLAB_LIBRARY_LOG_LEVEL={level!r} is not a logging level: use WARNING (the "
            "default), or INFO to export libraries' INFO records too."
        )
    return TelemetryExtras(
        otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip(),
        otlp_signal_endpoints={signal: url for signal, url in specific.items() if url},
        library_log_level=level,
        service_name_set=bool(env.get("OTEL_SERVICE_NAME", "").strip())
        or any(
            part.strip().startswith("service.name=")
            for part in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
        ),
    )


# --- every section at once ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AllSettings:
    """The one settings object, one section per area. ``%load_ext`` and ``o11ylab.init()``
    build it first, so a value o11ylab cannot use anywhere stops them with one line naming the
    variable, rather than failing later inside a call. Each area reads its own section again
    where it uses it (``load_serve()``, ...), so a notebook that changes a variable is heard."""

    telemetry: Settings
    telemetry_extras: TelemetryExtras
    hardware: HardwareSettings
    serve: ServeSettings
    openai: OpenAISettings
    chroma: ChromaSettings
    models: ModelsSettings
    run: RunConfig
    instrumentation: InstrumentationSettings


def load_all(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
) -> AllSettings:
    env = os.environ if env is None else env
    return AllSettings(
        telemetry=load_settings(env, overrides),
        telemetry_extras=load_telemetry(env),
        hardware=load_hardware(env),
        serve=load_serve(env),
        openai=load_openai(env),
        chroma=load_chroma(env),
        models=load_models(env),
        run=load_run(env),
        instrumentation=load_instrumentation(env),
    )


# --- traitlets ---------------------------------------------------------------------------------


class O11yLab(Configurable):
    """Options for ``ipython_config.py``; each one left unset falls back to its env variable."""

    prometheus_port = Int(
        None,
        allow_none=True,
        help="Port of the /metrics endpoint (0 turns it off). Env: O11YLAB_PROMETHEUS_PORT.",
    ).tag(config=True)
    prometheus_host = Unicode(
        None, allow_none=True, help="Address /metrics binds to. Env: O11YLAB_PROMETHEUS_HOST."
    ).tag(config=True)
    runs_dir = Unicode(
        None, allow_none=True, help="Folder for per-run telemetry files. Env: O11YLAB_RUNS_DIR."
    ).tag(config=True)
    trace_file = Bool(
        None, allow_none=True, help="Write OTLP-JSON lines files per run. Env: O11YLAB_TRACE_FILE."
    ).tag(config=True)
    autotrace = Bool(
        None, allow_none=True, help="Trace every cell as a span. Env: O11YLAB_AUTOTRACE."
    ).tag(config=True)
    summary = Bool(
        None,
        allow_none=True,
        help="Print a one-line summary after traced cells. Env: O11YLAB_SUMMARY.",
    ).tag(config=True)
    buffer_spans = Int(
        None,
        allow_none=True,
        help="Recent spans kept in memory for %o11y trace. Env: O11YLAB_BUFFER_SPANS.",
    ).tag(config=True)

    def overrides(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.trait_names(config=True)}
