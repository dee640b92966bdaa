"""Checks ``oserve serve`` makes before any engine starts (starting engines takes a minute)."""

from __future__ import annotations

import contextlib
import errno
import socket

from oserve.errors import ConfigError

__all__ = ["ensure_port_free"]


def ensure_port_free(host: str, port: int) -> None:
    """Raise if ``host:port`` cannot be bound now (port 0: only the host is checked, on any free port).

    Binds a socket the way uvicorn does (``SO_REUSEADDR``) and closes it at once.

    Raises:
        ConfigError: the port is taken (field ``server.port``) or the address is not local
            (field ``server.host``).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve server.host {host!r}: {exc.strerror}", field="server.host",
                          allowed="a local address or host name") from exc
    family, kind, proto, _, addr = infos[0]
    with contextlib.closing(socket.socket(family, kind, proto)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use; choose another with --port or "
                                  "server.port (0: any free port)", field="server.port",
                                  allowed="a free TCP port") from exc
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}", field="server.host",
                              allowed="an address of this machine") from exc
