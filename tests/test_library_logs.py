"""Libraries' INFO chatter is not exported by default; your own loggers keep O11YLAB_LOG_LEVEL.

Every call through httpx logs ``HTTP Request: POST ...`` at INFO: exported, that was one log
record per call (3,202 records for 3,200 calls in one benchmark).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from o11ylab.config import ConfigError, load_telemetry
from o11ylab.otlpjson import read_logs
from o11ylab.telemetry._logging import OtelLogHandler, is_library_logger


def test_libraries_and_the_standard_library_are_told_apart_from_your_loggers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx  # noqa: F401 - loaded, as it is when it logs
    import urllib3  # noqa: F401

    (tmp_path / "my_pipeline.py").write_text("import logging\nlog = logging.getLogger(__name__)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_pipeline  # type: ignore[import-not-found]  # noqa: F401 - a module of your own

    assert is_library_logger("httpx") and is_library_logger("urllib3.connectionpool")
    assert is_library_logger("asyncio") and is_library_logger("concurrent.futures")
    for yours in ("my_pipeline", "etl.load", "__main__", "root", "o11ylab.hardware"):
        assert not is_library_logger(yours), yours


@pytest.fixture
def exported() -> Iterator[tuple[InMemoryLogRecordExporter, LoggerProvider]]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(shutdown_on_exit=False)  # this test's own, not the global one
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


def _bodies(exporter: InMemoryLogRecordExporter) -> list[str]:
    return [str(r.log_record.body) for r in exporter.get_finished_logs()]


def _emit(handler: OtelLogHandler) -> None:
    import httpx  # noqa: F401

    for name, level, text in [
        ("httpx", logging.INFO, "HTTP Request: POST http://127.0.0.1/v1/chat"),
        ("httpx", logging.WARNING, "httpx warns"),
        ("etl", logging.INFO, "loaded 7 rows"),
        ("etl", logging.DEBUG, "row detail"),
    ]:
        handler.handle(logging.LogRecord(name, level, __file__, 1, text, None, None))


def test_the_bridge_exports_libraries_from_warning_and_yours_from_your_level(
    exported: tuple[InMemoryLogRecordExporter, LoggerProvider],
) -> None:
    exporter, provider = exported
    defaults = load_telemetry({})
    handler = OtelLogHandler(
        provider, logging.INFO, logging.getLevelName(defaults.library_log_level)
    )
    _emit(handler)
    assert _bodies(exporter) == ["httpx warns", "loaded 7 rows"]


def test_a_library_logger_is_quieted_back_to_the_old_root_level_and_restored(
    exported: tuple[InMemoryLogRecordExporter, LoggerProvider],
) -> None:
    """o11ylab lowers the root to INFO for your loggers; a library's INFO records then existed
    only to be dropped. After the first, that library's logger makes none (as before loading),
    your loggers keep INFO, a level you set stays, and unload puts NOTSET back."""
    _, provider = exported
    library = logging.getLogger("asyncio.o11ylab-test")  # a standard-library logger's child
    chosen = logging.getLogger("json.o11ylab-test")
    yours = logging.getLogger("etl-o11ylab-test")
    chosen.setLevel(logging.DEBUG)
    handler = OtelLogHandler(provider, logging.INFO, logging.WARNING, logging.WARNING)
    try:
        for logger in (library, chosen, yours):
            handler.handle(
                logging.LogRecord(logger.name, logging.INFO, __file__, 1, "x", None, None)
            )
        assert library.level == logging.WARNING
        assert chosen.level == logging.DEBUG and yours.level == logging.NOTSET
        handler.restore_library_levels()
        assert library.level == logging.NOTSET and chosen.level == logging.DEBUG
    finally:
        for logger in (library, chosen):
            logger.setLevel(logging.NOTSET)


def test_library_info_comes_back_when_asked(
    exported: tuple[InMemoryLogRecordExporter, LoggerProvider],
) -> None:
    exporter, provider = exported
    asked = load_telemetry({"O11YLAB_LIBRARY_LOG_LEVEL": "info"})
    handler = OtelLogHandler(provider, logging.INFO, logging.getLevelName(asked.library_log_level))
    _emit(handler)
    assert "HTTP Request: POST http://127.0.0.1/v1/chat" in _bodies(exporter)
    assert "row detail" not in _bodies(exporter), "your loggers keep O11YLAB_LOG_LEVEL"
    with pytest.raises(ConfigError, match="O11YLAB_LIBRARY_LOG_LEVEL"):
        load_telemetry({"O11YLAB_LIBRARY_LOG_LEVEL": "chatty"})


KERNEL = """
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from IPython.core.interactiveshell import InteractiveShell

class Ok(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Ok)
threading.Thread(target=server.serve_forever, daemon=True).start()
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "o11ylab")
ip.user_ns["url"] = f"http://127.0.0.1:{server.server_port}/v1/chat"
assert ip.run_cell('''%%traced calls --quiet
import httpx, logging
for _ in range(5):
    httpx.post(url, json={})
logging.getLogger("etl").info("made 5 calls")
''').success
"""


@pytest.mark.integration
@pytest.mark.parametrize("library_level", [None, "INFO"])
def test_a_kernel_exports_no_log_record_per_http_request_unless_asked(
    run_env: dict[str, str], library_level: str | None
) -> None:
    env = dict(run_env, OTEL_METRICS_EXPORTER="none", O11YLAB_HARDWARE="0")
    if library_level:
        env["O11YLAB_LIBRARY_LOG_LEVEL"] = library_level
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KERNEL)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    bodies = [str(r["body"]) for r in read_logs(Path(run_env["O11YLAB_RUN_DIR"]))]
    requests = [b for b in bodies if b.startswith("HTTP Request: POST")]
    assert "made 5 calls" in bodies, json.dumps(bodies)
    assert len(requests) == (5 if library_level else 0), json.dumps(bodies)
