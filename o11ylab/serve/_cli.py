"""The ``o11ylab serve`` command: its arguments, its key, and running the server."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import models, semconv
from ..config import ConfigError, load_serve
from ..telemetry import is_loopback
from ._config import (
    API_KEY_ENV,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_MB,
    DEFAULT_PORT,
    MAX_BODY_ENV,
    ServeConfig,
)


def _watch_parent(pid: int, server: Any) -> None:
    """Stop the server when the process that started it is gone (a killed kernel leaves no
    atexit behind to stop it)."""
    while not server.should_exit:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            server.should_exit = True
            return
        except PermissionError:
            pass
        time.sleep(1.0)


def _service_name_unset() -> bool:
    from ..config import load_telemetry

    return not load_telemetry().service_name_set


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def _report_port(path: str, port: int) -> None:
    """Write the bound port for the launcher, whole or not at all (it polls for the file)."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(str(port), encoding="utf-8")
    os.replace(partial, target)


def serve(
    config: ServeConfig, *, exit_with_parent: int | None = None, port_file: str | None = None
) -> int:
    """Bind, load the models and serve until interrupted. This process's telemetry (providers,
    run files, /metrics) is set up here: the command owns its process, the app does not.

    The port is bound before the models load (seconds to minutes) and held from then on:
    a launcher that picked a free port and let the child bind it after loading had another
    local process take the port first and receive the prompts. ``port_file`` gets the bound
    port (``--port 0`` picks one) as soon as it is held."""
    import uvicorn

    from ..ai import local_model
    from ..telemetry import get_telemetry
    from ._app import create_app

    if not is_loopback(config.host) and not config.api_key:
        print(
            f"o11ylab serve: refusing to listen on {config.host} without an API key: pass "
            f"--api-key-file PATH or set {API_KEY_ENV} (loopback, the default, needs none).",
            file=sys.stderr,
        )
        return 2
    try:
        listener = _listen(config.host, config.port)
    except OSError as exc:
        print(
            f"o11ylab serve: cannot listen on {config.host}:{config.port} ({exc.strerror or exc}): "
            "choose another --port, or stop what holds it.",
            file=sys.stderr,
        )
        return 1
    config = dataclasses.replace(config, port=int(listener.getsockname()[1]))
    if port_file:
        _report_port(port_file, config.port)
    if _service_name_unset():
        os.environ["OTEL_SERVICE_NAME"] = semconv.SERVE_SERVICE_NAME
    telemetry = get_telemetry()
    _set_torch_threads(load_serve().torch_threads)
    try:
        app = create_app(config, after_load=_freeze_loaded)
    except (models.ModelNotFoundError, local_model.LocalModelError) as exc:
        print(f"o11ylab serve: {exc}", file=sys.stderr)
        listener.close()
        return 1
    _freeze_loaded()
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(uv_config)
    if exit_with_parent:
        threading.Thread(
            target=_watch_parent,
            args=(exit_with_parent, server),
            name="o11ylab-parent-watch",
            daemon=True,
        ).start()
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(
        f"o11ylab serve: http://{host}:{config.port}/v1 (chat and embeddings; /health, /metrics)",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn stops on SIGTERM and then raises the signal again with the handler it found:
    # the default one ended the process there, before the telemetry below was flushed, and the
    # last requests' spans were lost (a run's last GET /v1/models). This handler lets it finish.
    signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        server.run(sockets=[listener])
    finally:
        telemetry.shutdown()
    return 0


def _freeze_loaded() -> None:
    """Put what loading left (the models, torch, transformers, the app: ~450k objects for the
    tiny model) out of the garbage collector's reach, for good. A full collection scanned them
    all, 186-217 ms during which every request waited (14-36 ms frozen): p99 at 10 clients in
    bench_serve_throughput was 217-300 ms in the runs one fell in, against 73-81 ms."""
    gc.collect()
    gc.freeze()


def _set_torch_threads(threads: int | None) -> None:
    """torch's intra-op threads for this process (O11YLAB_SERVE_TORCH_THREADS; see config)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)


def _exit_quietly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default 127.0.0.1; anything else needs a key)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--model",
        default=None,
        help="chat model folder or cached hub id (default: LOCAL_MODEL_NAME, "
        f"else {models.DEFAULT_CHAT_MODEL})",
    )
    parser.add_argument(
        "--embedding-model",
        default=None,
        help="embedding model folder (default: EMBEDDING_MODEL, else "
        f"{models.DEFAULT_EMBEDDING_MODEL})",
    )
    parser.add_argument(
        "--api-key-file",
        default=None,
        metavar="PATH",
        help=f"file whose first line is the bearer key every /v1 request must send "
        f"(default: {API_KEY_ENV})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="the key itself: readable by every local user in the process list; prefer "
        f"--api-key-file or {API_KEY_ENV}",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=None,
        metavar="MB",
        help=f"largest request body accepted, in MB; 0 for no limit (default: {MAX_BODY_ENV}, "
        f"else {DEFAULT_MAX_BODY_MB})",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda:0 (default: USE_GPU / GPU_DEVICE_ID)",
    )
    parser.add_argument(
        "--exit-with-parent", type=int, default=None, metavar="PID", help=argparse.SUPPRESS
    )
    # The launcher's private file for the bound port (see serve()).
    parser.add_argument("--port-file", default=None, metavar="PATH", help=argparse.SUPPRESS)


def api_key_from(args: argparse.Namespace) -> str | None:
    """The server's key: ``--api-key-file``, else ``--api-key`` (with a warning), else
    ``O11YLAB_SERVE_API_KEY``. Never echoes a key."""
    if args.api_key_file:
        path = Path(args.api_key_file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").partition("\n")[0].strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(
                f"o11ylab serve: cannot read --api-key-file {path} "
                f"({getattr(exc, 'strerror', None) or type(exc).__name__}): "
                "point it at a readable file whose first line is the key."
            ) from None
        if not key:
            raise SystemExit(
                f"o11ylab serve: --api-key-file {path} is empty: put the key on its first line."
            )
        return key
    if args.api_key:
        print(
            "o11ylab serve: --api-key is readable by every local user in the process list; "
            f"use --api-key-file PATH or {API_KEY_ENV} instead.",
            file=sys.stderr,
        )
        return str(args.api_key).strip() or None
    return load_serve().api_key


def max_body_bytes_from(args: argparse.Namespace) -> int:
    """``--max-body-mb``, else ``O11YLAB_SERVE_MAX_BODY_MB``, else the default, in bytes."""
    megabytes = args.max_body_mb
    if megabytes is None:
        megabytes = load_serve().max_body_mb
    if not 0 <= megabytes <= 1024:  # NaN fails too
        raise SystemExit(
            f"o11ylab serve: --max-body-mb={megabytes!r} is not a size in MB: "
            "use a number in 0..1024 (0: no limit)."
        )
    return int(megabytes * 1024 * 1024)


def run_command(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        config = ServeConfig(
            model=args.model,
            embedding_model=args.embedding_model,
            host=args.host,
            port=args.port,
            api_key=api_key_from(args),
            device=args.device,
            max_body_bytes=max_body_bytes_from(args),
            max_queue=load_serve().max_queue,
        )
    except ConfigError as exc:
        raise SystemExit(f"o11ylab serve: {exc}") from None
    return serve(config, exit_with_parent=args.exit_with_parent, port_file=args.port_file)
