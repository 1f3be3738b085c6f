"""Settings: every bad value gets one clear error that names the variable and hides secrets."""

from __future__ import annotations

import os

import pytest

from o11ylab.config import ConfigError, ContentCapture, load_serve, load_settings


def test_defaults_are_local_and_private() -> None:
    settings = load_settings({})
    assert settings.otlp_signals == ()
    assert settings.prometheus_host == "127.0.0.1"
    assert settings.prometheus_port == 9464
    assert settings.trace_file is True
    assert settings.capture_content is ContentCapture.NO_CONTENT
    assert settings.export_timeout_s <= 5, "a short export timeout bounds a dead collector"


def test_endpoint_enables_every_signal_with_its_protocol() -> None:
    settings = load_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
            "OTEL_LOGS_EXPORTER": "none",
        }
    )
    assert settings.otlp_signals == ("traces", "metrics")
    assert settings.otlp_protocol == {"traces": "http/protobuf", "metrics": "grpc"}


def test_per_signal_endpoint_alone_enables_that_signal() -> None:
    settings = load_settings(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otlp.example/v1/traces"}
    )
    assert settings.otlp_signals == ("traces",)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"O11YLAB_PROMETHEUS_PORT": "nine"}, "O11YLAB_PROMETHEUS_PORT"),
        ({"O11YLAB_PROMETHEUS_PORT": "70000"}, "0..65535"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317"}, "http://127.0.0.1:4318"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            },
            "http/protobuf, grpc",
        ),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "seconds"),
        ({"O11YLAB_TRACE_FILE": "maybe"}, "1/0"),
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "ALL"}, "SPAN_ONLY"),
        ({"O11YLAB_LOG_LEVEL": "LOUD"}, "INFO"),
    ],
)
def test_bad_values_say_what_to_do(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        load_settings(env)


def test_a_bad_url_is_never_echoed_because_it_may_hold_a_token() -> None:
    secret = "glc_SENTINEL_NOT_A_REAL_TOKEN"
    with pytest.raises(ConfigError) as caught:
        load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": f"ftp://user:{secret}@host"})
    assert secret not in str(caught.value)


def test_traitlets_options_override_the_environment() -> None:
    settings = load_settings({"O11YLAB_PROMETHEUS_PORT": "9500"}, {"prometheus_port": 9600})
    assert settings.prometheus_port == 9600
    with pytest.raises(ConfigError, match="Unknown o11ylab setting"):
        load_settings({}, {"no_such_option": 1})


def test_capture_content_accepts_the_instrumentations_true_false() -> None:
    on = load_settings({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"})
    assert on.capture_content.on_spans
    both = load_settings({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_and_event"})
    assert both.capture_content is ContentCapture.SPAN_AND_EVENT


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
)
def test_a_key_in_the_endpoints_query_string_is_refused_unseen(variable: str) -> None:
    # The SDK's retry warnings print the URL with its query: the key would reach stderr.
    with pytest.raises(ConfigError) as refused:
        load_settings({variable: "https://otlp.example/v1/traces?api_key=sk-SECRET-123"})
    message = str(refused.value)
    assert variable in message and "OTEL_EXPORTER_OTLP_HEADERS" in message
    assert "SECRET" not in message and "api_key" not in message


def test_safe_url_keeps_ipv6_brackets_and_drops_the_rest() -> None:
    from o11ylab.telemetry import safe_url

    assert safe_url("http://u:pw@[::1]:4318/v1/traces?k=v") == "http://[::1]:4318/v1/traces"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CHROMA_PORT": "eighty"}, "CHROMA_PORT"),
        ({"USE_GPU": "perhaps"}, "USE_GPU"),
        ({"O11YLAB_SERVE_MAX_QUEUE": "0"}, "O11YLAB_SERVE_MAX_QUEUE"),
        ({"O11YLAB_HARDWARE_INTERVAL": "soon"}, "O11YLAB_HARDWARE_INTERVAL"),
        ({"O11YLAB_RUN_CONNECT_TIMEOUT": "-1"}, "O11YLAB_RUN_CONNECT_TIMEOUT"),
    ],
)
def test_one_settings_object_checks_every_section(env: dict[str, str], needle: str) -> None:
    """What %load_ext and o11ylab.init() build first: a bad value in any area stops them."""
    from o11ylab.config import load_all

    assert load_all({}).serve.max_queue > 0  # the defaults load
    with pytest.raises(ConfigError, match=needle):
        load_all(env)


def test_serve_leaves_a_core_to_its_own_threads_unless_told() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert load_serve({}).torch_threads == max(1, cpus - 1)
    assert load_serve({"O11YLAB_SERVE_TORCH_THREADS": "3"}).torch_threads == 3
    assert load_serve({"O11YLAB_SERVE_TORCH_THREADS": "0"}).torch_threads is None  # torch's own
    assert load_serve({"OMP_NUM_THREADS": "4"}).torch_threads is None  # OpenMP's setting holds
    both = {"OMP_NUM_THREADS": "4", "O11YLAB_SERVE_TORCH_THREADS": "2"}
    assert load_serve(both).torch_threads == 2
    with pytest.raises(ConfigError, match="O11YLAB_SERVE_TORCH_THREADS"):
        load_serve({"O11YLAB_SERVE_TORCH_THREADS": "many"})
