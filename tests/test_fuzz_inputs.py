"""Everything a user types, fuzzed: magic lines, settings, a price file, model names.

Each property is what a user would notice: a bad input gets one clear line (a ``UsageError``,
a ``ConfigError``, a ``PricingError``, a ``ModelNotFoundError`` or an ``AIError``), never some
other exception from deep inside, never a secret echoed back, and the kernel keeps working
afterwards. Examples are bounded (``FUZZ``) so the whole file runs in well under a minute.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from o11ylab import models, semconv
from o11ylab.config import ConfigError, load_settings
from o11ylab.pricing import PricingError, cost_of, load_table
from o11ylab.testing import capture_spans

from .ai_support import LocalServer, local_fixture, local_server_fixture  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(240)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(FUZZ, max_examples=25)

SECRET = "SENTINEL7f3a9c"
# What str.splitlines() breaks on: IPython splits a cell there, so a user cannot put these
# inside one magic line (the rest would be the next line of Python).
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Text a user could type: no lone surrogates; no NUL either, which no environment can hold.
typed = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
one_line = st.characters(exclude_categories=("Cs",), exclude_characters="\x00" + LINE_BREAKS)


# --- %%traced and %o11y ------------------------------------------------------------------------

MAGIC_WORDS = [
    "--attr",
    "-a",
    "--quiet",
    "-q",
    "--all",
    "--",
    "-",
    "=",
    "k=v",
    "team=search",
    "=v",
    "k=",
    "'",
    '"',
    "\\",
    "'a b'",
    '"k=v w"',
    "status",
    "flush",
    "trace",
    "spans",
    "autotrace",
    "on",
    "off",
    "monitor",
    "stop",
    "start",
    "--help",
    "-h",
    "0" * 32,
    "<script>alert(1)</script>",
    "é",
    "🙂",
    "$x",
    "{x}",
    "%%",
    "#",
    "\t",
    "\x00",
    "--attr=k=v",
    "--quiet=1",
]
magic_line = st.one_of(
    st.text(one_line, max_size=40),
    st.lists(
        st.one_of(st.sampled_from(MAGIC_WORDS), st.text(one_line, max_size=8)), max_size=6
    ).map(" ".join),
)


def run_quietly(shell: Any, source: str) -> tuple[Any, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = shell.run_cell(source, store_history=False)
    return result, out.getvalue(), err.getvalue()


def assert_success_or_one_usage_line(result: Any, out: str, err: str) -> None:
    error = result.error_before_exec or result.error_in_exec
    assert "Traceback" not in out + err, out + err
    if error is None:
        return
    assert type(error) is UsageError, f"{type(error).__name__}: {error}"
    message = str(error)
    assert message.strip() and "\n" not in message, repr(message)
    # What the user sees: exactly one line, IPython's "UsageError: ..." (no argparse usage dump).
    assert err.strip().splitlines() == [f"UsageError: {message}"], err


def assert_shell_still_traces(shell: Any) -> None:
    with capture_spans() as spans:
        result, out, err = run_quietly(shell, "%%traced after-fuzz --quiet\n_after_fuzz = 41 + 1")
    assert result.success, (out, err)
    assert shell.user_ns["_after_fuzz"] == 42
    assert [s.name for s in spans] == ["after-fuzz"]


@pytest.fixture
def restore_autotrace(shell: Any) -> Iterator[None]:
    yield
    shell.run_line_magic("o11y", "autotrace off")


@FUZZ
@given(line=magic_line)
@example(line='"unclosed')
@example(line="--attr 'k=v")
@example(line="--attr novalue")
@example(line="\\")
@example(line="name extra words")
def test_traced_argument_lines_succeed_or_say_one_usage_line(shell: Any, line: str) -> None:
    shell.user_ns.pop("_fuzz_body_ran", None)
    with capture_spans() as spans:
        result, out, err = run_quietly(shell, f"%%traced {line}\n_fuzz_body_ran = True")
    assert_success_or_one_usage_line(result, out, err)
    if result.success:
        assert shell.user_ns.get("_fuzz_body_ran") is True, "a traced cell runs its body"
        cells = [s for s in spans if semconv.CELL_SOURCE_SHA256 in (s.attributes or {})]
        assert len(cells) == 1, [s.name for s in spans]
    else:
        assert "_fuzz_body_ran" not in shell.user_ns, "a refused cell does not run its body"
        assert spans == [], "a refused cell leaves no span behind"
    assert_shell_still_traces(shell)


@FUZZ
@given(line=magic_line)
@example(line='"unclosed')
@example(line="trace 'x")
@example(line="\\")
@example(line="trace --nope")
@example(line="trace a b")
@example(line="status now")
@example(line="autotrace maybe")
@example(line="monitor sideways")
def test_o11y_command_lines_succeed_or_say_one_usage_line(
    shell: Any, restore_autotrace: None, line: str
) -> None:
    result, out, err = run_quietly(shell, f"%o11y {line}")
    assert_success_or_one_usage_line(result, out, err)
    from o11ylab.widgets import HardwareMonitor

    if isinstance(result.result, HardwareMonitor):  # `%o11y monitor` opened a panel
        result.result.close()
    shell.run_line_magic("o11y", "autotrace off")
    assert_shell_still_traces(shell)


def test_o11y_trace_names_the_argument_it_refuses(shell: Any) -> None:
    result, _, err = run_quietly(shell, "%o11y trace --nope")
    assert isinstance(result.error_in_exec, UsageError)
    assert "--nope" in str(result.error_in_exec), "the message says what was wrong"
    assert "usage:" not in err, "no argparse usage dump next to the one-line error"


# --- settings from the environment -------------------------------------------------------------

KNOWN_SAMPLERS = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
junk = st.text(typed, max_size=20)
numberish = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "",
            " ",
            "1e3",
            "0x10",
            "nine",
            "65536",
            "-1",
            "١٢",
            "1_0",
            "∞",
            "1" * 5000,
            " 42 ",
            "4318.0",
        ]
    ),
    junk,
)
flag = st.one_of(st.sampled_from(["1", "0", "true", "False", "yes", "off", "", "maybe", "2"]), junk)
url = st.one_of(
    st.sampled_from(["http://127.0.0.1:4318", "https://otlp.example", "http://[::1]:4317"]),
    st.builds(
        lambda scheme, auth, host, port, tail: f"{scheme}{auth}{host}{port}{tail}",
        st.sampled_from(["http://", "https://", "ftp://", "grpc://", "", "http:/", "HTTP://"]),
        st.sampled_from(["", f"user:{SECRET}@", f"{SECRET}@"]),
        st.sampled_from(
            [
                "127.0.0.1",
                "localhost",
                "[::1]",
                "[::1",
                "a]b",
                "",
                "＃x",
                "h h",
                "xn--n3h",
                "ü.example",
                "%41",
            ]
        ),
        st.sampled_from(["", ":4318", ":99999", ":-1", ":x", ":", ":0", ":١"]),
        st.sampled_from(["", "/", "/v1/traces", f"?token={SECRET}", f"#{SECRET}", "/ x"]),
    ),
    junk,
)
header_item = st.builds(
    lambda key, sep, value: f"{key}{sep}{value}",
    st.one_of(
        st.sampled_from(["Authorization", "x-api-key", "a b", "", "k\u00e9y", "(k)"]),
        st.text(typed, max_size=6),
    ),
    st.sampled_from(["=", " = ", ": ", "", "=="]),
    st.one_of(
        st.sampled_from(
            [
                f"Bearer {SECRET}",
                f"Basic%20{SECRET}",
                f"{SECRET}%0A",
                SECRET,
                f"{SECRET}%FF",
                f'"{SECRET}"',
                f"{SECRET};x",
                f"{SECRET}\\",
            ]
        ),
        st.text(typed, max_size=10).map(lambda v: SECRET + v),
    ),
)
headers = st.lists(header_item, max_size=3).flatmap(
    lambda items: st.sampled_from([",", ", ", " ,", ";"]).map(lambda sep: sep.join(items))
)
protocol = st.one_of(
    st.sampled_from(["http/protobuf", "grpc", "http/json", "GRPC", "", " grpc "]), junk
)
sampler = st.one_of(
    st.sampled_from(KNOWN_SAMPLERS),
    st.sampled_from(KNOWN_SAMPLERS).map(str.upper),
    st.sampled_from(KNOWN_SAMPLERS).map(lambda s: f" {s}"),
    st.sampled_from(["", "bogus", "jaeger_remote", "xray", "traceidratio_"]),
    junk,
)
sampler_arg = st.one_of(
    st.floats(-1, 2).map(str),
    st.sampled_from(["", " 0.5 ", "nan", "inf", "-0.0", "1", "0", "1.0000001", "half", "50%", "١"]),
    junk,
)
exporter = st.one_of(st.sampled_from(["otlp", "none", "console", "zipkin", "OTLP", " none "]), junk)
path_text = st.one_of(
    st.sampled_from(["~nosuchuser-o11y/x", "~", "~/runs", "", "relative/dir"]),
    st.text(typed, max_size=12),
)

ENV = {
    "O11YLAB_PROMETHEUS_PORT": numberish,
    "O11YLAB_BUFFER_SPANS": numberish,
    "OTEL_METRIC_EXPORT_INTERVAL": numberish,
    "OTEL_EXPORTER_OTLP_TIMEOUT": numberish,
    "O11YLAB_TRACE_FILE": flag,
    "O11YLAB_AUTOTRACE": flag,
    "O11YLAB_SUMMARY": flag,
    "OTEL_EXPORTER_OTLP_ENDPOINT": url,
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url,
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": url,
    "OTEL_EXPORTER_OTLP_HEADERS": headers,
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": headers,
    "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
    "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": protocol,
    "OTEL_TRACES_EXPORTER": exporter,
    "OTEL_LOGS_EXPORTER": exporter,
    "OTEL_TRACES_SAMPLER": sampler,
    "OTEL_TRACES_SAMPLER_ARG": sampler_arg,
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": st.one_of(
        st.sampled_from(["SPAN_ONLY", "span_and_event", "true", "0", "ALL", ""]), junk
    ),
    "O11YLAB_LOG_LEVEL": st.one_of(st.sampled_from(["INFO", "debug", "LOUD", "", "10"]), junk),
    "O11YLAB_PROMETHEUS_HOST": st.one_of(st.sampled_from(["0.0.0.0", "::1", ""]), junk),
    "O11YLAB_RUNS_DIR": path_text,
    "O11YLAB_RUN_DIR": path_text,
}
environments = st.fixed_dictionaries({}, optional=ENV)


def settings_or_config_error(env: dict[str, str]) -> ConfigError | None:
    try:
        load_settings(env)
    except ConfigError as exc:
        return exc
    return None


@settings(FUZZ, max_examples=300)
@given(env=environments)
@example(env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://user:{SECRET}@[::1"})
@example(env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{SECRET}＃x:4318"})
@example(env={"O11YLAB_RUNS_DIR": "~nosuchuser-o11y/runs"})
@example(env={"O11YLAB_RUN_DIR": "~nosuchuser-o11y/run"})
@example(env={"O11YLAB_PROMETHEUS_PORT": "70000"})
@example(
    env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization: Bearer {SECRET}",
    }
)
@example(
    env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json",
    }
)
def test_any_environment_gives_settings_or_one_clear_config_error(env: dict[str, str]) -> None:
    error = settings_or_config_error(env)  # nothing else may escape
    if error is not None:
        message = str(error)
        assert message and "\n" not in message, repr(message)
        assert SECRET not in message, "URLs and headers may hold tokens: never echoed"
        assert any(name in message for name in env) or "O11yLab." in message, message


def test_bad_values_at_load_ext_stop_with_one_line_naming_the_variable(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    """In a fresh process, as a user meets it: ``%load_ext`` refuses, nothing half-started."""
    bad = {
        "OTEL_TRACES_SAMPLER": "traceidration",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization: Bearer {SECRET}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://user:{SECRET}@[::1",
        "O11YLAB_RUNS_DIR": "~nosuchuser-o11y/runs",
    }
    script = textwrap.dedent("""
        import json, os, sys
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        for variable, value in json.loads(sys.argv[1]).items():
            saved = dict(os.environ)
            os.environ[variable] = value
            if variable == "OTEL_EXPORTER_OTLP_HEADERS":
                os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
            print("### begin", flush=True)
            result = ip.run_cell("%load_ext o11ylab")
            print("### end", variable, "loaded" if result.success else "refused", flush=True)
            os.environ.clear()
            os.environ.update(saved)
        result = ip.run_cell("%load_ext o11ylab")
        result = ip.run_cell("%%traced fine\\nx = 1") if result.success else result
        print("### after", "works" if result.success else "broken", flush=True)
    """)
    env = {**run_env, "O11YLAB_RUN_DIR": str(tmp_path / "run"), "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5"}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(bad)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=120,
        check=False,
    )
    output = done.stdout
    assert done.returncode == 0, output
    assert "Traceback" not in output and SECRET not in output, output
    for block in output.split("### begin")[1:]:
        seen, _, verdict = block.partition("### end ")
        variable, outcome = verdict.split()[:2]
        assert outcome == "refused", f"{variable}={bad[variable]!r} was accepted"
        lines = seen.strip().splitlines()  # what the user sees: one line, naming the variable
        assert len(lines) == 1 and lines[0].startswith("UsageError: o11ylab: "), seen
        assert variable in lines[0], seen
    assert output.count("### begin") == len(bad), output
    assert "### after works" in output, "with the values fixed, the extension loads and traces"


# The SDK reads these two itself; it only logs a warning for a value it cannot use and then
# samples everything. o11ylab must refuse exactly what the SDK cannot use, and accept the rest.
@settings(FUZZ, max_examples=120)
@given(name=sampler, arg=st.one_of(st.none(), sampler_arg))
@example(name="traceidratio", arg=None)
@example(name="bogus", arg=None)
@example(name="traceidratio", arg="nan")
@example(name="TraceIdRatio", arg=" 0.25 ")
def test_o11ylab_accepts_exactly_the_samplers_the_sdk_can_use(name: str, arg: str | None) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    env = {"OTEL_TRACES_SAMPLER": name}
    if arg is not None:
        env["OTEL_TRACES_SAMPLER_ARG"] = arg
    error = settings_or_config_error(env)
    cleared = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_TRACES_SAMPLER")}
    with (
        warnings_of("opentelemetry.sdk.trace.sampling") as warnings,
        mock.patch.dict(os.environ, {**cleared, **env}, clear=True),
    ):
        TracerProvider(shutdown_on_exit=False)  # reads the two variables, as o11ylab's does
    if error is None:
        assert not warnings, f"accepted, but the SDK ignores it: {warnings}"
    else:
        assert warnings, f"refused a value the SDK uses: {error}"
        assert "OTEL_TRACES_SAMPLER" in str(error)


class WarningsSeen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def warnings_of(logger_name: str) -> Iterator[list[str]]:
    """The warnings one logger gives inside the block, kept from the rest of the logging."""
    seen = WarningsSeen()
    logger = logging.getLogger(logger_name)
    logger.addHandler(seen)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield seen.messages
    finally:
        logger.propagate = propagate
        logger.removeHandler(seen)


@settings(FUZZ, max_examples=150)
@given(raw=headers)
@example(raw=f"Authorization: Bearer {SECRET}")
@example(raw=f"Authorization=Bearer%20{SECRET}")
@example(raw=f"authorization=Bearer {SECRET}, x-scope=team")
@example(raw=f"k={SECRET}%0Ainjected: 1")
@example(raw="")
def test_otlp_headers_are_accepted_only_when_every_one_reaches_the_exporter(raw: str) -> None:
    from opentelemetry.util.re import parse_env_headers

    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": raw,
    }
    error = settings_or_config_error(env)
    with warnings_of("opentelemetry.util.re") as warnings:
        parsed = parse_env_headers(raw, liberal=True)  # what the OTLP exporters do with it
    if warnings:
        # The SDK would log the malformed header, secret and all, and drop it.
        assert error is not None, f"accepted {raw!r}; the exporter drops part of it"
    if error is None:
        for value in parsed.values():
            assert value.isprintable(), f"a header value the HTTP client cannot send: {value!r}"
    else:
        assert "OTEL_EXPORTER_OTLP_HEADERS" in str(error)
        assert SECRET not in str(error)


# --- a price override file ---------------------------------------------------------------------

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.integers(min_value=10**300, max_value=10**330),
    st.text(typed, max_size=8),
)
any_json = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(typed, max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
price = st.one_of(st.integers(-5, 10**400), st.floats(), st.sampled_from(["0.1", None, [], {}]))
entry = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "input": price,
            "output": price,
            "cached_input": price,
            "kind": st.sampled_from(["chat", "embeddings", "rerank", 1, None, ["chat"], {}]),
            "local": st.sampled_from([True, False, "yes", 0]),
            "per_image": price,
        },
    ),
    any_json,
)
price_table = st.fixed_dictionaries(
    {
        "models": st.one_of(
            st.dictionaries(st.text(typed, max_size=12), entry, max_size=3), any_json
        )
    },
    optional={
        "version": any_json,
        "date": any_json,
        "source": any_json,
        "currency": st.sampled_from(["USD", "EUR", None, ["USD"]]),
    },
)
price_file = st.one_of(
    price_table.map(lambda t: json.dumps(t).encode()),
    any_json.map(lambda v: json.dumps(v).encode()),
    st.text(typed, max_size=60).map(str.encode),
    st.binary(max_size=60),
)
_file_numbers = itertools.count()


@pytest.fixture(scope="module")
def price_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prices")


@settings(FUZZ, max_examples=150)
@given(content=price_file)
@example(content=b"\xff\xfe not utf-8")
@example(content=b'{"models": {"m": {"input": ' + b"1" * 5000 + b', "output": 1}}}')
@example(content=b'{"models": {"m": {"input": 1' + b"0" * 400 + b', "output": 1}}}')
@example(content=b"[" * 50_000 + b"]" * 50_000)
@example(content=b'{"models": {"m": {"input": NaN, "output": 1}}}')
@example(content=b'{"models": {"gpt-test": {"input": 1.5, "output": 6}}}')
def test_a_price_file_is_used_or_refused_with_an_error_naming_it(
    price_dir: Path, content: bytes
) -> None:
    path = price_dir / f"prices-{next(_file_numbers)}.json"  # a new name: no stale cache
    path.write_bytes(content)
    try:
        table = load_table(path)
    except PricingError as exc:
        assert str(path) in str(exc), "the message names the file to fix"
        return
    for name in table.models:  # every price the file set gives a finite cost >= 0
        cost = cost_of(name, input_tokens=1000, output_tokens=10, table=table)
        assert cost is None or 0 <= cost.amount < float("inf"), (name, cost)


# --- model names --------------------------------------------------------------------------------

model_name = st.one_of(
    st.text(typed, max_size=40),
    st.sampled_from(
        [
            "../../etc",
            "../../../../etc/passwd",
            "/etc/passwd",
            "/etc",
            "~root",
            "~",
            "~nosuchuser-o11y/model",
            "",
            " ",
            "\t",
            "x" * 5000,
            "a/" * 200,
            "/" * 300,
            "a" * 200 + "/" + "b" * 200,
            "\u202emodel",
            "🤖/🤖",
            "org/..",
            "x/../..",
            "C:\\Windows",
            "%2e%2e%2fetc",
            "..%2F..%2Fetc",
            "a\x00b",
            "CON",
            "/proc/self/root",
            ".",
            "..",
        ]
    ),
)
_reads: list[str] = []


_recording_thread = [0]  # only this thread's opens: the hardware sampler reads /proc meanwhile


def _record_opens(event: str, args: tuple[Any, ...]) -> None:
    if (
        _recording_thread[0]
        and event == "open"
        and isinstance(args[0], str)
        and threading.get_ident() == _recording_thread[0]
    ):
        _reads.append(args[0])


sys.addaudithook(_record_opens)


@contextlib.contextmanager
def files_opened() -> Iterator[list[str]]:
    """Paths this thread opens inside the block (the interpreter's "open" audit events)."""
    _reads.clear()
    _recording_thread[0] = threading.get_ident()
    try:
        yield _reads
    finally:
        _recording_thread[0] = 0


def allowed_model_roots() -> list[str]:
    from huggingface_hub import constants

    roots = [
        constants.HF_HUB_CACHE,
        str(models.cache_dir()),
        sys.prefix,
        sys.base_prefix,
        # Fixed files huggingface_hub reads (its cache's filesystem, the machine's boot id),
        # whatever the name: not a path a model name chose.
        "/proc/self/mountinfo",
        "/proc/sys/kernel/random/boot_id",
    ]
    return [os.path.realpath(r) for r in roots]


@FUZZ
@given(name=model_name)
def test_a_model_name_resolves_or_says_how_to_get_it_and_reads_only_model_folders(
    name: str,
) -> None:
    roots = allowed_model_roots()
    with files_opened() as opened:
        for resolve in (
            lambda n: models.resolve_chat_model(n, prepare=False),
            models.resolve_embedding_model,
        ):
            try:
                ref = resolve(name)
            except models.ModelNotFoundError as exc:
                assert str(exc).strip(), "the error says what to do"
            else:
                assert ref.path.is_dir()
    for path in opened:
        real = os.path.realpath(path)
        assert any(real == r or real.startswith(r + os.sep) for r in roots), (
            f"resolving {name!r} read {path}"
        )


def endpoint_call(local: LocalServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    url = local.base_url.removesuffix("/v1") + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"content-type": "application/json", "authorization": f"Bearer {local.api_key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@FEW
@given(name=model_name)
@example(name="../../etc/passwd")
def test_the_endpoint_answers_any_model_name_with_404_never_500(
    local: LocalServer, name: str
) -> None:
    served = {local.chat_model, local.embedding_model}
    calls = [
        (
            "POST",
            "/v1/chat/completions",
            {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        ),
        ("POST", "/v1/embeddings", {"model": name, "input": "hi"}),
        ("GET", "/v1/models/" + urllib.parse.quote(name, safe=""), None),
    ]
    for method, path, body in calls:
        status, answer = endpoint_call(local, method, path, body)
        assert status < 500, (method, path, answer)
        if name not in served and status != 200:
            assert status in (400, 404), (method, path, status, answer)
            assert answer["error"]["message"], answer
            if status == 404 and path != "/v1/models/":
                assert answer["error"]["code"] in ("model_not_found", None), answer


def test_the_endpoint_never_loads_a_folder_a_client_names(
    local: LocalServer, tmp_path: Path
) -> None:
    """A model folder that exists on the server's disk, but is not the one it serves: 404."""
    other = models.build_tiny_model(tmp_path / "other-model")
    for name in (str(other), str(other / ".." / "other-model"), "other-model"):
        status, answer = endpoint_call(
            local,
            "POST",
            "/v1/chat/completions",
            {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        )
        assert status == 404 and answer["error"]["code"] == "model_not_found", answer
    status, listed = endpoint_call(local, "GET", "/v1/models")
    assert [m["id"] for m in listed["data"]] == [local.chat_model, local.embedding_model]


@FEW
@given(name=model_name)
def test_the_chat_client_turns_any_model_name_into_one_clear_error(
    local: LocalServer, name: str
) -> None:
    from o11ylab.ai import AIError, chat

    try:
        reply = chat("hi", model=name, max_tokens=1)
    except AIError as exc:
        assert str(exc).strip()
    else:
        assert name == local.chat_model, f"answered for a model it does not serve: {reply!r}"
