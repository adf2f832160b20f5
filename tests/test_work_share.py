"""Issue 24, live delivery: what one user's costly selections wait for is their own, never
anyone else's. The background share (live.share.WorkShare) hands its next turn to the
waiting piece whose account used the least of it lately, and a selection shared by several
users is one account weighing as many (live.selection.Group). The figure this buys, an honest
subscriber's p99 while another member holds 100 heavy subscriptions, is `make bench-abuse`'s."""

from __future__ import annotations

import asyncio

from live.selection import Group
from live.share import WorkShare


async def test_a_user_with_many_pieces_waiting_delays_anyone_else_by_one_piece_at_most() -> None:
    share = WorkShare(share=1.0, burst=10.0)  # the bucket never empties: only the order is seen
    order: list[str] = []
    release = asyncio.Event()

    async def piece(account: str, label: str, hold: asyncio.Event | None = None) -> None:
        async with share.piece(account):
            order.append(label)
            if hold is not None:
                await hold.wait()

    first = asyncio.create_task(piece("attacker", "a0", release))
    while not order:  # the attacker holds the turn
        await asyncio.sleep(0)
    attacker = [asyncio.create_task(piece("attacker", f"a{n}")) for n in range(1, 30)]
    while share.waiting < 29:
        await asyncio.sleep(0)
    honest = asyncio.create_task(piece("honest", "h"))
    while share.waiting < 30:
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, honest, *attacker)
    assert order[:2] == ["a0", "h"], order
    assert sorted(order) == sorted(["h", *(f"a{n}" for n in range(30))])


async def test_a_cancelled_waiter_neither_holds_the_turn_nor_breaks_the_hand_over() -> None:
    share = WorkShare(share=1.0, burst=10.0)
    release = asyncio.Event()
    done: list[str] = []

    async def piece(account: str, hold: asyncio.Event | None = None) -> None:
        async with share.piece(account):
            if hold is not None:
                await hold.wait()
            done.append(account)

    holder = asyncio.create_task(piece("a", release))
    gone = asyncio.create_task(piece("b"))
    after = asyncio.create_task(piece("c"))
    while share.waiting < 2:
        await asyncio.sleep(0)
    gone.cancel()
    release.set()
    await asyncio.gather(holder, after)
    assert gone.cancelled()
    assert done == ["a", "c"]


async def test_use_is_charged_to_the_account_divided_by_its_weight() -> None:
    share = WorkShare(share=1.0, burst=10.0)
    async with share.piece("alone"):
        await asyncio.sleep(0.02)
    async with share.piece("shared", weight=10):
        await asyncio.sleep(0.02)
    assert share.usage("alone") >= 0.02
    assert share.usage("shared") < share.usage("alone") / 5


class _Viewer:
    def __init__(self, user: int) -> None:
        self.id = user


class _Source:
    kinds = None
    event_id = None

    def __init__(self, user: int) -> None:
        self.viewer = _Viewer(user)


class _Subscription:
    """What a Group reads of a subscription."""

    def __init__(self, user: int) -> None:
        self.source = _Source(user)
        self.key = ("subscription { x }", None, "{}")
        self.selection = None

    @property
    def viewer(self) -> _Viewer:
        return self.source.viewer


def test_a_group_is_its_one_users_account_or_its_own_weighing_its_users() -> None:
    one, other = _Subscription(1), _Subscription(2)
    group = Group(one, (), cost=0.004)  # type: ignore[arg-type]
    group.add(one)  # type: ignore[arg-type]
    group.add(_Subscription(1))  # type: ignore[arg-type]
    assert group.account == 1 and group.weight == 1 and group.charge == 0.004
    group.add(other)  # type: ignore[arg-type]
    assert group.account is group and group.weight == 2 and group.charge == 0.002
    group.discard(other)  # type: ignore[arg-type]
    assert group.account == 1 and group.weight == 1
