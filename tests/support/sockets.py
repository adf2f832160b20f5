"""What the kernel's socket table says about a server's connections (`ss`), for barriers no
protocol offers: whether the server has read what a client sent, whether it has noticed a close."""

from __future__ import annotations

import subprocess


def _server_side(state: str, port: int) -> list[str]:
    output = subprocess.run(
        ["ss", "-tnH", "state", state, f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in output.splitlines() if line.strip()]


def unread_by_server(port: int) -> int:
    """Bytes received on the server's established connections on `port` that no process has read
    yet (the kernel's Recv-Q): 0 once the server has read all its clients sent, headers included."""
    return sum(int(line.split()[0]) for line in _server_side("established", port))


def closes_unnoticed(port: int) -> int:
    """The server's connections on `port` that their client closed and the server has not closed
    yet (CLOSE-WAIT): 0 once the server has noticed every client's close."""
    return len(_server_side("close-wait", port))
