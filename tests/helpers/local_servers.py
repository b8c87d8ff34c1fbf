"""Loopback servers for tests: a free port, and the access token the emulators accept."""

from __future__ import annotations

import socket

FAKE_TOKEN = "efm-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
