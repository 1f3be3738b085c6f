"""A plain ``openai.OpenAI()`` works offline: the environment o11ylab sets for the kernel.

With neither ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` set, ``activate()`` (what
``%load_ext o11ylab`` and ``o11ylab.init()`` call) sets both for this process and the
processes it starts:

- ``OPENAI_BASE_URL`` to a loopback address this process listens on at once (a relay: no model
  is loaded and nothing starts yet);
- ``OPENAI_API_KEY`` to a random key made for this process (``O11YLAB_SERVE_API_KEY`` when
  that is set): the endpoint the relay starts requires it, so no other local user can use
  it, and proves on /health that it holds it, so the relay reaches that server and no other.
  (The SDK and libraries built on it, Chroma's ``OpenAIEmbeddingFunction`` and
  ``langchain-openai``, refuse to build a client without a key anyway.)

The first connection starts the local endpoint (``o11ylab serve``, or the shared one
``O11YLAB_LOCAL_ENDPOINT`` names) and is then relayed to it byte for byte, as is every later
one; a server that died is replaced on the next connection. If it cannot start, the client
gets an OpenAI-style error (503, not retried) that says why. So every client built on the
openai SDK, the user's own included, takes the same code path, and the same instrumentation,
as with OpenAI. With either variable set, nothing changes. ``deactivate()`` puts the
environment back.
"""

from __future__ import annotations

import json
import os
import socket
import threading

__all__ = ["PLACEHOLDER_KEY", "LocalRelay", "activate", "active_url", "deactivate", "is_local_url"]

PLACEHOLDER_KEY = "o11ylab-local-endpoint"
_VARS = ("OPENAI_BASE_URL", "OPENAI_API_KEY")
_CHUNK = 64 * 1024


class LocalRelay:
    """A loopback listener that starts the local endpoint on first use and relays to it."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key  # what the endpoint it starts requires
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._target: tuple[str, int] | None = None
        self._target_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="o11ylab-relay", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        try:
            # close() alone does not wake a thread blocked in accept() on Linux; shutdown does.
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._serve, args=(client,), name="o11ylab-relay-conn", daemon=True
            ).start()

    def _resolve(self, stale: bool) -> tuple[str, int]:
        with self._target_lock:
            if self._target is None or stale:
                from urllib.parse import urlparse

                from .serve import ensure_local_endpoint

                parsed = urlparse(ensure_local_endpoint(api_key=self.api_key))
                self._target = (parsed.hostname or "127.0.0.1", parsed.port or 80)
                from . import pricing

                pricing.register_local_server(*self._target)
            return self._target

    def _connect(self) -> socket.socket:
        try:
            return socket.create_connection(self._resolve(stale=False), timeout=10)
        except OSError:
            # The server we knew is gone (killed, crashed): start or find another.
            return socket.create_connection(self._resolve(stale=True), timeout=10)

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = self._connect()
        except Exception as exc:  # noqa: BLE001 - the endpoint cannot start: say why, in the SDK's terms
            _refuse(client, exc)
            return
        upstream.settimeout(None)
        pump = threading.Thread(
            target=_pump, args=(upstream, client), daemon=True, name="o11ylab-relay-back"
        )
        pump.start()
        _pump(client, upstream)
        pump.join()
        for sock in (client, upstream):
            try:
                sock.close()
            except OSError:
                pass


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(_CHUNK)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _refuse(client: socket.socket, exc: BaseException) -> None:
    message = (
        f"o11ylab could not start its local model endpoint ({type(exc).__name__}: "
        f"{exc}). Install the AI extras (pip install 'o11ylab[ai]') and prepare the "
        f"models (o11ylab models prepare), or set OPENAI_BASE_URL / OPENAI_API_KEY."
    )
    body = json.dumps(
        {
            "error": {
                "message": message[:2000],
                "type": "server_error",
                "code": "local_endpoint_unavailable",
            }
        }
    ).encode()
    head = (
        f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nx-should-retry: false\r\nConnection: close\r\n\r\n"
    )
    try:
        client.settimeout(5)
        client.recv(_CHUNK)  # the request line and headers; the SDK waits for us to read
        client.sendall(head.encode() + body)
    except OSError:
        pass
    finally:
        client.close()


_lock = threading.Lock()
_relay: LocalRelay | None = None
_saved: dict[str, str | None] | None = None


def activate() -> str | None:
    """Point the openai SDK at the local endpoint when nothing else is configured.

    Returns the base URL it set, or None when the environment already names an endpoint.
    """
    global _relay, _saved
    with _lock:
        if _relay is not None:
            return _relay.base_url
        from .config import load_serve, openai_configured

        if openai_configured():
            return None
        from .serve import new_launch_key

        key = load_serve().api_key or new_launch_key()
        _relay = LocalRelay(api_key=key)
        _saved = {name: os.environ.get(name) for name in _VARS}
        os.environ["OPENAI_BASE_URL"] = _relay.base_url
        os.environ["OPENAI_API_KEY"] = key
        from . import pricing

        pricing.register_local_server("127.0.0.1", _relay.port)
        return _relay.base_url


def deactivate() -> None:
    """Close the relay and put back the variables ``activate`` set (if nobody changed them)."""
    global _relay, _saved
    with _lock:
        relay, saved, _relay, _saved = _relay, _saved, None, None
        if relay is None or saved is None:
            return
        relay.close()
        ours_still_set = os.environ.get("OPENAI_BASE_URL") == relay.base_url
        if ours_still_set:  # else the user pointed it elsewhere since: theirs stays
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def active_url() -> str | None:
    return None if _relay is None else _relay.base_url


def is_local_url(base_url: str) -> bool:
    """Whether ``base_url`` is o11ylab's local endpoint: this process's relay, or the shared
    server ``O11YLAB_LOCAL_ENDPOINT`` names (``o11ylab run`` sets it for its kernels)."""
    url = base_url.rstrip("/")
    if _relay is not None and url == _relay.base_url:
        return True
    from .config import load_serve

    shared = (load_serve().local_endpoint or "").rstrip("/")
    if shared:
        shared = shared if shared.endswith("/v1") else shared + "/v1"
        return url == shared
    return False
