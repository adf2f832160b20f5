"""The schema the server serves (introspection) is exactly schema.graphql."""

from __future__ import annotations

import httpx
from graphql import build_client_schema, build_schema, get_introspection_query, print_schema

from tests.support.processes import ROOT, Server


def test_introspection_matches_the_sdl_file(server: Server) -> None:
    response = httpx.post(f"{server.url}/graphql", json={"query": get_introspection_query(descriptions=True)})
    served = build_client_schema(response.json()["data"])
    expected = build_schema((ROOT / "schema.graphql").read_text())
    assert print_schema(served) == print_schema(expected)
