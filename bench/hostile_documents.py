"""Issue 24's hostile documents against one real worker (gunicorn, Postgres, Redis): how fast each
is answered, and what. Each is sent 20 times as distinct texts (a trailing comment), so no cache
helps; POST and GET use different comments for the same reason.

    .venv/bin/python -m bench.hostile_documents
"""

from __future__ import annotations

import json
import statistics
import time
import uuid

import httpx
from graphql import get_introspection_query

from tests.support.processes import SHARED_REDIS_URL, Server, create_database, drop_database, migrate, unique_name
from tests.test_abuse_documents import ALIASED_SCHEMA, LIST_ATTACK, WIDE_INTROSPECTION, fragment_bomb

DOCUMENTS = [
    ("150 aliased __schema", ALIASED_SCHEMA),
    ("fragments, 2 aliases a level", fragment_bomb(2)),
    ("fragments, 3 aliases a level", fragment_bomb(3)),
    ("30 aliases within shape", WIDE_INTROSPECTION),
    ("23 aliases of rooms{events(first:100)}", LIST_ATTACK),
    ("standard introspection", get_introspection_query()),
]


def main() -> None:
    name = unique_name("bench_hostile")
    url = create_database(name)
    env = {"DATABASE_URL": url, "REDIS_URL": SHARED_REDIS_URL, "CHANNEL_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:"}
    migrate(env)
    server = Server(env=env, workers=1).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for label, document in DOCUMENTS:
                for method in ("POST", "GET"):
                    times, response = [], None
                    for index in range(20):
                        text = f"{document} #{method}{index}"
                        started = time.perf_counter()
                        if method == "POST":
                            body = json.dumps({"query": text})
                            response = http.post("/graphql", content=body, headers={"content-type": "application/json"})
                        else:
                            response = http.get("/graphql", params={"query": text})
                        times.append(time.perf_counter() - started)
                    assert response is not None
                    answer = response.json()
                    code = [e["extensions"]["code"] for e in answer.get("errors", [])][:1] or ["data"]
                    print(
                        f"{label:<40} {method:<5} {len(document.encode()):>6} B  {code[0]:<18} "
                        f"median {statistics.median(times) * 1000:6.1f} ms  max {max(times) * 1000:6.1f} ms  "
                        f"answer {len(response.content)} B"
                    )
    finally:
        server.stop()
        drop_database(name)


if __name__ == "__main__":
    main()
