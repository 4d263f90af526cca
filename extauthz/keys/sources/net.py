"""Socket options for the long-lived connections of key sources (API server, IdP).

A peer that vanishes without a FIN (a dead node, a NAT or load-balancer entry that
expired, packets silently dropped) leaves a connection that looks open forever. TCP
keepalive probes find it: after :data:`KEEPALIVE_IDLE` seconds of silence a probe
every :data:`KEEPALIVE_INTERVAL` seconds, and after :data:`KEEPALIVE_COUNT`
unanswered probes the kernel resets the connection, so a dead peer is detected within
``15 + 5 * 3 = 30`` seconds. ``TCP_USER_TIMEOUT`` bounds the same way data that was
sent and never acknowledged. Keepalive does not help when the peer's kernel still
answers but the process sends nothing; the watch read timeout covers that case.
"""

from __future__ import annotations

import socket

KEEPALIVE_IDLE = 15  # seconds of silence before the first probe
KEEPALIVE_INTERVAL = 5  # seconds between probes
KEEPALIVE_COUNT = 3  # unanswered probes before the connection is reset
USER_TIMEOUT_MS = 30_000  # unacknowledged data for this long resets the connection

#: the most a dead peer can go unnoticed on an idle connection, in seconds
DEAD_PEER_SECONDS = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT


def keepalive_socket_options() -> list[tuple[int, int, int]]:
    """urllib3 ``socket_options``: its default (``TCP_NODELAY``) plus keepalive.

    Options the platform does not define are left out (macOS names the idle time
    ``TCP_KEEPALIVE`` and has no ``TCP_USER_TIMEOUT``).
    """
    options = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    if idle is not None:
        options.append((socket.IPPROTO_TCP, idle, KEEPALIVE_IDLE))
    if hasattr(socket, "TCP_KEEPINTVL"):
        options.append((socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL))
    if hasattr(socket, "TCP_KEEPCNT"):
        options.append((socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT))
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS))
    return options
