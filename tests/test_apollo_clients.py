"""Real Apollo Client apps (Node) against the real server: GraphQLWsLink and WebSocketLink."""

from __future__ import annotations

import os
import subprocess

from tests.support.processes import ROOT, Server

JS = ROOT / "tests" / "js"


def test_apollo_clients_on_both_links(server: Server) -> None:
    assert (JS / "node_modules" / "@apollo" / "client").is_dir(), "run `make test`: it installs tests/js (npm ci)"
    result = subprocess.run(
        ["node", "--test", "--test-reporter=spec", str(JS)],
        cwd=ROOT,
        env={**os.environ, "CHAT_SERVER_URL": server.url},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pass 2" in result.stdout and "fail 0" in result.stdout, result.stdout
