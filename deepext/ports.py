"""Picking a free local port that no other process of the platform will grab first."""

from __future__ import annotations

import random
import socket

# Below the kernel's ephemeral range (32768-60999 on Linux) and Ray Serve's replica HTTP ports
# (30000-30999), above Ray's worker ports (10002-19999): a port the kernel hands out for "any free
# port" can be taken by one of Ray's own processes or outgoing connections between the probe and the
# server binding it (CI saw Serve fail to bind so).
UNCLAIMED_PORTS = range(20000, 30000)


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that is free now and that neither the kernel nor Ray picks on its own."""
    for port in random.sample(UNCLAIMED_PORTS, 200):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {UNCLAIMED_PORTS}")
