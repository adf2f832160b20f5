"""The README's "Putting it behind your product" Django examples, run as written against the
real server (embedded default): the view minting a JWT signs its user in,
`open_order_chat` makes the order's room once (a retry returns it) with its system message, and
the webhook view, given that message's real delivery, verifies it and pushes to the members
who are offline, and refuses a tampered one. Django itself is stubbed: only `settings`,
`login_required`, `csrf_exempt`, `require_POST` and the two responses are used."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import ROOT, Server, migrate
from tests.support.waiting import until_sync
from tests.support.webhooks import Received, Receiver, readme_verify

KEY = "readme-service-key-" + "k" * 32
SECRET = "readme-secret-" + "s" * 32
WEBHOOK_SECRET = "readme-webhook-secret"


def readme_python_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Putting it behind your product") : readme.index("## What a deployer")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def django(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    settings = types.SimpleNamespace()
    modules: dict[str, Any] = {
        name: types.ModuleType(name) for name in ("django", "django.contrib", "django.contrib.auth")
    }
    modules["django.conf"] = types.ModuleType("django.conf")
    modules["django.conf"].settings = settings
    modules["django.contrib.auth.decorators"] = types.ModuleType("django.contrib.auth.decorators")
    modules["django.contrib.auth.decorators"].login_required = lambda view: view
    modules["django.http"] = types.ModuleType("django.http")
    modules["django.http"].HttpResponse = lambda content=b"", status=200: types.SimpleNamespace(
        content=content, status_code=status
    )
    modules["django.http"].HttpResponseForbidden = lambda: types.SimpleNamespace(content=b"", status_code=403)
    for name in ("django.views", "django.views.decorators"):
        modules[name] = types.ModuleType(name)
    modules["django.views.decorators.csrf"] = types.ModuleType("django.views.decorators.csrf")
    modules["django.views.decorators.csrf"].csrf_exempt = lambda view: view
    modules["django.views.decorators.http"] = types.ModuleType("django.views.decorators.http")
    modules["django.views.decorators.http"].require_POST = lambda view: view
    modules["chat_webhooks"] = types.ModuleType("chat_webhooks")
    modules["chat_webhooks"].verify = readme_verify()
    modules["notifications"] = types.ModuleType("notifications")
    settings.pushed = []
    modules["notifications"].send_push = lambda user, body, dedupe_key: settings.pushed.append((user, body, dedupe_key))
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return settings


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def served(tmp_path: Path, receiver: Receiver) -> Iterator[Server]:
    env = {
        "WEBHOOK_URL": receiver.url,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
        "REDIS_URL": "",
        "SERVICE_KEY": KEY,
        "AUTH_JWT_SECRET": SECRET,
        "AUTH_JWT_ISSUER": "https://shop.example.com",
        "AUTH_JWT_AUDIENCE": "chat",
    }
    migrate(env)
    server = Server(env=env, workers=1).start()
    yield server
    server.stop()


def person(name: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(get_full_name=lambda: name)


def test_the_readme_examples_run(served: Server, receiver: Receiver, django: types.SimpleNamespace) -> None:
    django.CHAT_URL, django.CHAT_SERVICE_KEY, django.CHAT_JWT_SECRET = served.url, KEY, SECRET
    django.CHAT_WEBHOOK_SECRET = WEBHOOK_SECRET
    blocks = readme_python_blocks()  # found by what they define: the section holds others too
    [minting] = [block for block in blocks if "def chat_token" in block]
    [calling] = [block for block in blocks if "def open_order_chat" in block]
    view: dict[str, Any] = {}
    exec(minting, view)
    user = types.SimpleNamespace(pk=7, username="ann", get_full_name=lambda: "Ann Buyer")
    token = view["chat_token"](types.SimpleNamespace(user=user)).content
    me = httpx.post(
        f"{served.url}/graphql",
        json={"query": "{ me { name externalId } }"},
        headers={"authorization": f"Bearer {token}"},
    ).json()
    assert me == {"data": {"me": {"name": "Ann Buyer", "externalId": "7"}}}
    service: dict[str, Any] = {}
    exec(calling, service)
    order = types.SimpleNamespace(pk=42, buyer_id=7, seller_id=8, buyer=person("Ann Buyer"), seller=person("Sam S"))
    service["open_order_chat"](order)
    service["open_order_chat"](order)  # a retry: the same room
    query = '{ roomByExternalId(externalId: "order-42") { memberCount messages { edges { node { body kind } } } } }'
    room = service["chat"](query)["roomByExternalId"]
    assert room["memberCount"] == 2
    assert [edge["node"] for edge in room["messages"]["edges"]] == [{"body": "Order placed", "kind": "SYSTEM"}] * 2

    # The system message's delivery, handed to the README's webhook view as Django would.
    [hearing] = [block for block in blocks if "def chat_webhook" in block]
    hook: dict[str, Any] = {}
    exec(hearing, hook)

    def posted() -> list[Received]:
        return [
            r
            for r in receiver.snapshot()
            if r.payload["type"] == "message.created" and r.payload["data"]["message"]["kind"] == "SYSTEM"
        ]

    until_sync(lambda: len(posted()) == 2, "both system messages delivered", 30)
    delivery = posted()[0]
    request = types.SimpleNamespace(headers=delivery.headers, body=delivery.body)
    assert hook["chat_webhook"](request).status_code == 204
    offline = {user for user, _body, _key in django.pushed}
    assert offline == {"7", "8"}, django.pushed  # nobody has a connection open; the sender is System
    assert {body for _user, body, _key in django.pushed} == {"Order placed"}
    tampered = types.SimpleNamespace(headers=delivery.headers, body=delivery.body.replace(b"Order", b"Refund"))
    assert hook["chat_webhook"](tampered).status_code == 403
    assert len(django.pushed) == 2
