"""Starting ``o11ylab serve`` from Python: ``LocalEndpoint`` (a subprocess for as long as an
object says) and ``ensure_local_endpoint`` (the one this process shares). Client side only:
nothing here imports the server's web stack."""

from __future__ import annotations

import atexit
import hmac
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .. import models, semconv
from .._say import say
from ..config import load_serve
from ..errors import O11yLabError
from ._config import API_KEY_ENV, DEFAULT_HOST, LOCAL_ENDPOINT_ENV, START_TIMEOUT_ENV
from ._gate import CHALLENGE_HEADER, PROOF_HEADER, proof


class EndpointError(O11yLabError, RuntimeError):
    """The local endpoint could not be started or reached. The message says why and what next."""


def new_launch_key() -> str:
    """A random key for one auto-started endpoint: only the clients that launched it can use
    it, and its /health proof tells it from anything else on its port."""
    return secrets.token_urlsafe(32)


def _root(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _healthy(base_url: str, timeout: float = 2.0, api_key: str | None = None) -> bool:
    """Whether ``base_url`` answers /health; with ``api_key``, whether the server there holds
    that key (it proves it on a fresh challenge, so nothing else on the port passes)."""
    request = urllib.request.Request(_root(base_url) + "/health")
    challenge = secrets.token_hex(16)
    if api_key:
        request.add_header(CHALLENGE_HEADER, challenge)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status != 200:
                return False
            if not api_key:
                return True
            given = response.headers.get(PROOF_HEADER, "")
            return hmac.compare_digest(given, proof(api_key, challenge))
    except (OSError, urllib.error.URLError, ValueError):
        return False


class LocalEndpoint:
    """``o11ylab serve`` in a subprocess on 127.0.0.1, for as long as this object says.

        with LocalEndpoint() as endpoint:
            client = openai.OpenAI(base_url=endpoint.base_url, api_key="unused")

    ``start()`` prepares the default model first when needed (progress on stderr), waits for
    ``/health`` up to ``start_timeout_s`` (default 120 s, env ``O11YLAB_SERVE_START_TIMEOUT``)
    and raises ``EndpointError`` with the end of the server's log if it does not come up.
    The server also stops by itself when this process dies.

    The child binds its port (``port``, else one the system picks) before it loads anything
    and reports it back in a private file; nothing is sent to a port before that. With
    ``api_key`` (``new_launch_key()`` for one of its own) the server requires the key and
    proves on /health that it holds it, so the start-up probe and the first request reach this
    server and no other.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        embedding_model: str | None = None,
        port: int | None = None,
        api_key: str | None = None,
        start_timeout_s: float | None = None,
        env: dict[str, str] | None = None,
        echo: bool = True,
    ) -> None:
        self.model = model
        self.embedding_model = embedding_model
        self.host = DEFAULT_HOST
        self.port = port
        self.api_key = api_key
        self.start_timeout_s = start_timeout_s or load_serve().start_timeout_s
        self.env = env
        self.echo = echo
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise EndpointError("the local endpoint is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _say(self, message: str) -> None:
        # Progress, not an error: stdout (Jupyter shows stderr as a red block), and the log.
        say(message, level=logging.INFO, show=self.echo)

    def _prepare_default_model(self, env: dict[str, str]) -> None:
        # The child's environment (what it will read), not a setting of this process.
        chosen = self.model or env.get("LOCAL_MODEL_NAME", "").strip()
        if chosen and chosen != models.DEFAULT_CHAT_MODEL:
            return
        cache = env.get("O11YLAB_MODEL_CACHE", "").strip()
        folder = (
            Path(cache).expanduser() / models.DEFAULT_CHAT_MODEL
            if cache
            else models.default_chat_model_dir()
        )
        if models.is_prepared(folder):
            return
        self._say(f"preparing {models.DEFAULT_CHAT_MODEL} once (about a minute, offline)")
        command = [sys.executable, "-m", "o11ylab", "models", "prepare"]
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        tail: list[str] = []
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail = ([*tail, line])[-20:]
            if line.startswith("["):  # our step lines; transformers' bars stay out of the way
                self._say(line)
        if process.wait() != 0:
            raise EndpointError(
                f"preparing {models.DEFAULT_CHAT_MODEL} failed:\n" + "\n".join(tail)
            )

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        env.pop("TRACEPARENT", None)  # the server continues each caller's trace from headers
        env["OTEL_SERVICE_NAME"] = semconv.SERVE_SERVICE_NAME
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        # OpenMP's spinning workers starve a generation that runs on a pooled thread when the
        # CPU is shared: 4-10x slower non-streamed chat on 2 busy cores; passive waits fix it.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if self.api_key:
            env[API_KEY_ENV] = self.api_key
        return env

    def _command(self, port_file: Path) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "o11ylab",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port or 0),
            "--port-file",
            str(port_file),
            "--exit-with-parent",
            str(os.getpid()),
        ]
        if self.model:
            command += ["--model", str(self.model)]
        if self.embedding_model:
            command += ["--embedding-model", str(self.embedding_model)]
        return command

    def start(self) -> LocalEndpoint:
        if self.running():
            return self
        env = self._child_env()
        self._prepare_default_model(env)
        self._log_dir = tempfile.TemporaryDirectory(prefix="o11ylab-serve-")  # 0700
        self.log_path = Path(self._log_dir.name) / "serve.log"
        port_file = Path(self._log_dir.name) / "port"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self._command(port_file),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready(self.process, port_file)
        return self

    def _wait_ready(self, process: subprocess.Popen[bytes], port_file: Path) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        bound: int | None = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log_tail = self._log_tail()
                self._cleanup()
                raise EndpointError(
                    f"o11ylab serve exited with status {process.returncode} before it was "
                    f"ready:\n{log_tail}"
                )
            if bound is None and port_file.exists():
                bound = self.port = int(port_file.read_text(encoding="utf-8"))
            if bound is not None and _healthy(self.base_url, 1.0, self.api_key):
                return
            time.sleep(0.2)
        log_tail = self._log_tail()
        self.stop()
        raise EndpointError(
            f"o11ylab serve did not answer /health within {self.start_timeout_s:.0f} s; raise "
            f"{START_TIMEOUT_ENV} on a slow machine. Its log ends with:\n{log_tail}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").replace("\r", "\n").splitlines()
        return "\n".join(line for line in text[-lines:] if line.strip())

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log_dir is not None:
            self._log_dir.cleanup()
            self._log_dir = None

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# The endpoint this process shares lives on the package, ``o11ylab.serve._SHARED``, where
# callers (and tests that reset it) have always found it.
_SHARED_LOCK = threading.Lock()


def _package() -> Any:
    return sys.modules[__package__]


def _exits_within(endpoint: LocalEndpoint, seconds: float) -> bool:
    """Whether a server that stopped answering exits within ``seconds`` (killed, crashing)."""
    if endpoint.process is None:
        return True
    try:
        endpoint.process.wait(seconds)
    except subprocess.TimeoutExpired:
        return False  # alive, just slow to answer: keep it
    return True


def _configured() -> str | None:
    """``O11YLAB_LOCAL_ENDPOINT``'s base URL when it answers ``/health`` (proving it holds
    ``O11YLAB_SERVE_API_KEY`` when that is set: the two name one shared server)."""
    settings = load_serve()
    if not settings.local_endpoint:
        return None
    base = _root(settings.local_endpoint) + "/v1"
    if _healthy(base, api_key=settings.api_key):
        return base
    print(
        f"o11ylab: {LOCAL_ENDPOINT_ENV} ({base}) does not answer /health; starting a local "
        "endpoint of this process's own instead.",
        file=sys.stderr,
        flush=True,
    )
    return None


def ensure_local_endpoint(
    *,
    model: str | None = None,
    embedding_model: str | None = None,
    start_timeout_s: float | None = None,
    api_key: str | None = None,
) -> str:
    """A base URL (ending in ``/v1``) of a healthy local OpenAI-compatible endpoint.

    ``O11YLAB_LOCAL_ENDPOINT`` when it is set and answers ``/health``; otherwise one server
    started for this process on a loopback port of its own (reused by later calls, stopped when
    the process exits), requiring ``api_key`` when one is given (the kernel's relay gives a
    ``new_launch_key()``).
    """
    configured = _configured()
    if configured:
        return configured
    package = _package()
    with _SHARED_LOCK:
        shared: LocalEndpoint | None = package._SHARED
        if shared is not None and shared.running():
            # A killed server can still look alive for a moment after its sockets close (the
            # client saw the connection drop first): wait for it to go, and start another.
            if _healthy(shared.base_url, api_key=shared.api_key) or not _exits_within(shared, 5.0):
                return shared.base_url
            shared.stop()
        endpoint = LocalEndpoint(
            model=model,
            embedding_model=embedding_model,
            api_key=api_key,
            start_timeout_s=start_timeout_s,
        )
        endpoint._say("starting the local model endpoint (o11ylab serve) on 127.0.0.1")
        endpoint.start()
        atexit.register(endpoint.stop)
        package._SHARED = endpoint
        endpoint._say(f"local OpenAI-compatible endpoint at {endpoint.base_url}")
        return endpoint.base_url
