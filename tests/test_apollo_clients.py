"""Real JavaScript clients (Node) against the real server: Apollo Client on GraphQLWsLink and
WebSocketLink; and over plain HTTP, Apollo's HttpLink with multipart subscriptions, Apollo's
persisted-queries link, graphql-sse's client and graphql-http's audit of the GraphQL-over-HTTP spec."""

from __future__ import annotations

import os
import re
import subprocess

from tests.support.processes import ROOT, Server

JS = ROOT / "tests" / "js"
# graphql-http 1.23.1's serverAudits (the version package-lock.json pins).
GRAPHQL_HTTP_AUDITS = 61


def run_node_tests(server: Server, file: str, env: dict[str, str] | None = None) -> str:
    assert (JS / "node_modules" / "@apollo" / "client").is_dir(), "run `make test`: it installs tests/js (npm ci)"
    try:
        result = subprocess.run(
            ["node", "--test", "--test-reporter=spec", str(JS / file)],
            cwd=ROOT,
            env={**os.environ, "CHAT_SERVER_URL": server.url, **(env or {})},
            capture_output=True,
            text=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired as timeout:  # its output is bytes, whatever `text` says
        output = b"".join(part or b"" for part in (timeout.stdout, timeout.stderr))
        raise AssertionError(f"{file} hung:\n{output.decode(errors='replace')}") from None
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_apollo_clients_on_both_links(server: Server) -> None:
    output = run_node_tests(server, "apollo.test.mjs")
    assert re.search(r"\bpass 2\b", output) and re.search(r"\bfail 0\b", output), output


def test_http_transport_clients(any_server: Server) -> None:
    output = run_node_tests(any_server, "http-transports.test.mjs")
    assert re.search(r"\btests 6\b", output), output
    assert re.search(r"\bpass 6\b", output) and re.search(r"\bfail 0\b", output), output
    audit = re.search(r"graphql-http audit: (\d+) audits, (\d+) ok", output)
    assert audit, output
    audits, ok = int(audit[1]), int(audit[2])
    assert audits == GRAPHQL_HTTP_AUDITS, output
    assert ok == audits, output  # every MUST, SHOULD and MAY
