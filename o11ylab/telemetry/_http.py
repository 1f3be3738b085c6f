"""Addresses: URLs safe to show, loopback checks, and the kernel's Prometheus ``/metrics`` server."""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any
from urllib.parse import urlparse

__all__ = ["is_loopback", "is_loopback_host_header", "metrics_server", "safe_url"]


def safe_url(url: str) -> str:
    """An endpoint for display: scheme, host, port and path; never user info or a query."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if ":" in host:  # IPv6: the brackets are part of the URL
        host = f"[{host}]"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def is_loopback(host: str) -> bool:
    """Whether a bind address is this machine's loopback (``localhost``, 127.x, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_host_header(value: str) -> bool:
    """Whether a Host header names this machine's loopback: 127.0.0.1, localhost or [::1],
    any port. An empty one (HTTP/1.0) passes: browsers always send a Host."""
    value = value.strip().lower()
    if not value:
        return True
    if value.startswith("["):
        host = value[1 : value.find("]")] if "]" in value else value
    else:
        host = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return host in ("127.0.0.1", "localhost", "::1")


def metrics_server(host: str, port: int) -> Any:
    """prometheus_client's /metrics server, in a thread; on a loopback bind it answers only
    requests addressed to 127.0.0.1, localhost or [::1] (a page's script reaching the port
    under its own name, DNS rebinding, gets a 403)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import REGISTRY, make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    metrics_app = make_wsgi_app(REGISTRY)
    loopback = is_loopback(host)

    def app(scope: dict[str, Any], start_response: Any) -> Any:  # scope: the WSGI environ
        if loopback and not is_loopback_host_header(scope.get("HTTP_HOST", "")):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"This /metrics answers only 127.0.0.1, localhost or [::1].\n"]
        return metrics_app(scope, start_response)

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds would fill the kernel's stderr

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host.strip("[]"), port, app, Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="o11ylab-metrics", daemon=True).start()
    return server
