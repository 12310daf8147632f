"""Where a local process listens: read from the kernel's socket table, not from the process's claims."""

from __future__ import annotations

import pathlib


def listen_addresses(port: int) -> set[str]:
    """The IPv4/IPv6 addresses with a listening TCP socket on ``port`` (``/proc/net/tcp`` and ``tcp6``)."""
    found: set[str] = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        path = pathlib.Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            found.add(_v6(address) if v6 else ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def _v6(address: str) -> str:
    if address == "0" * 32:
        return "::"
    if address == "00000000000000000000000001000000":
        return "::1"
    return address
