"""The kernel's /metrics on loopback answers only requests addressed to loopback (DNS rebinding)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from o11ylab.telemetry import is_loopback_host_header
from o11ylab.telemetry._http import metrics_server

from .conftest import free_port


@pytest.fixture
def metrics_port() -> Iterator[int]:
    server: Any = metrics_server("127.0.0.1", free_port())
    yield int(server.server_port)
    server.shutdown()
    server.server_close()


def get(port: int, host: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        connection.sendall(f"GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        answer = b""
        while piece := connection.recv(65536):
            answer += piece
    return answer


def test_a_foreign_host_gets_a_403_and_no_metrics(metrics_port: int) -> None:
    answer = get(metrics_port, "evil.example")
    assert answer.startswith(b"HTTP/1.0 403") and b"python_info" not in answer


def test_loopback_names_get_the_metrics(metrics_port: int) -> None:
    for host in (f"127.0.0.1:{metrics_port}", "localhost", f"[::1]:{metrics_port}"):
        answer = get(metrics_port, host)
        assert answer.startswith(b"HTTP/1.0 200") and b"python_info" in answer, host


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:9464", True),
        ("localhost:1", True),
        ("[::1]:8008", True),
        ("", True),
        ("evil.example", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example:80", False),
        ("[::2]:80", False),
        ("0.0.0.0", False),
    ],
)
def test_host_header_rule(value: str, allowed: bool) -> None:
    assert is_loopback_host_header(value) is allowed
