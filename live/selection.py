"""What subscribers asked for, and the groups that share its execution.

A `Selection` is one subscriber's document, operation and variables; subscribers whose
selections are equal (`GroupKey`) form one `Group` per feed, executed once per event and per
audience: the fields that depend on who asks split the group by the keys their audiences give
for that event (live.source.Audience), and each part gets its own result.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from graphql import (
    DocumentNode,
    Executor,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    get_named_type,
    visit,
)

from execution.lean_executor import LeanExecutor, Patch
from identity.auth import Viewer
from live.source import Audience, Event, Keyer

if TYPE_CHECKING:
    from live.subscription import Subscription


class Selection:
    """What a subscriber asked for; subscribers with equal keys receive the same bytes."""

    __slots__ = ("_executor", "document", "field", "operation_name", "query", "variables", "variables_key")

    def __init__(self, document: DocumentNode, query: str, operation_name: str | None, variables: dict | None) -> None:
        self.document = document
        self.query = query
        self.operation_name = operation_name
        self.variables = variables or {}
        # A str: orjson's bytes keep a buffer of a few KiB, and every subscriber's key holds this.
        self.variables_key = orjson.dumps(self.variables, option=orjson.OPT_SORT_KEYS).decode()
        self._executor: LeanExecutor | None = None
        self.field = root_field(document, operation_name)  # the schema's field: a closed set

    @classmethod
    def of(cls, document: DocumentNode, query: str, operation_name: str | None, variables: dict | None) -> Selection:
        return cls(document, query, operation_name, variables)

    def _built(self, schema: GraphQLSchema) -> LeanExecutor | list[GraphQLError]:
        """The executor built once for every event (variables coerced, fragments collected)."""
        if self._executor is None:
            built = LeanExecutor.build(
                schema, self.document, raw_variable_values=self.variables, operation_name=self.operation_name
            )
            if isinstance(built, list):
                return built
            assert isinstance(built, LeanExecutor)
            self._executor = built
        return self._executor

    def planned(self, schema: GraphQLSchema, event: Event, context: Any) -> dict[str, Any] | None:
        """An event's data by the executor's short path (no per-event copy), or None where it
        does not serve: then `executor_for` executes it as graphql-core does."""
        built = self._built(schema)
        return None if isinstance(built, list) else built.planned_event(event, context)

    def template(
        self,
        schema: GraphQLSchema,
        event: Event,
        context: Any,
        viewer_fields: frozenset[tuple[str, str]],
        shells: frozenset[tuple[str, str]],
    ) -> Template | None:
        """An event's result for one viewer (`context`'s) that any other viewer's is made from
        by writing in their own values (`Template.for_viewer`), where the executor's short path
        serves and what depends on who asks is leaves (or shells over them:
        LeanExecutor.patches); None otherwise."""
        built = self._built(schema)
        if isinstance(built, list):
            return None
        data = built.planned_event(event, context)
        if data is None:
            return None
        patches = built.patches(viewer_fields, shells)
        return None if patches is None else Template(self.field, built, event, data, patches)

    def executor_for(self, schema: GraphQLSchema, event: Event, context: Any) -> Executor | list[GraphQLError]:
        """An executor for one event, copied from the one built for every event, as graphql-core
        does for a subscription's events."""
        built = self._built(schema)
        if isinstance(built, list):
            return built
        executor = built.build_per_event_executor(event)
        executor.context_value = context  # fresh loaders per event: nothing goes stale
        return executor


class Template:
    """One execution of an event's selection, shared by every viewer whose result differs from
    it only in what depends on who asks (Selection.template)."""

    __slots__ = ("data", "event", "executor", "field", "patches")

    def __init__(
        self, field: str, executor: LeanExecutor, event: Event, data: dict[str, Any], patches: tuple[Patch, ...]
    ) -> None:
        self.field = field  # the selection's root field (telemetry counts by it)
        self.executor = executor
        self.event = event
        self.data = data  # as the viewer it was executed for sees it, until `for_viewer`
        self.patches = patches

    def for_viewer(self, context: Any) -> dict[str, Any] | None:
        """The result as another viewer (`context`'s) sees it, written into the one `data` (good
        until the next call: encode it first); None where it cannot be made so (execute theirs
        in full)."""
        if not self.patches or self.executor.patched(self.data, self.patches, self.event, context):
            return self.data
        return None


def root_field(document: DocumentNode, operation_name: str | None) -> str:
    """The subscription's root field (what telemetry counts it by)."""
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None or (definition.name is not None and definition.name.value == operation_name)
        ):
            for selection in definition.selection_set.selections:
                if isinstance(selection, FieldNode):
                    return selection.name.value
    return "unknown"


GroupKey = tuple[str, str | None, str]
# A payload in a feed's memory: the group's key and its subscribers' audience key for the event.
PayloadKey = tuple[GroupKey, tuple[Hashable, ...]]


def keyers_for(audiences: tuple[Audience, ...], event: Event) -> list[Keyer]:
    """What tells viewers apart for this event (nothing, when all see the same)."""
    return [keyer for keyer in (audience(event) for audience in audiences) if keyer is not None]


def audience_key(keyers: list[Keyer], viewer: Viewer) -> tuple[Hashable, ...]:
    if len(keyers) == 1:  # the usual case (a `mine`, or per viewer): no generator
        return (keyers[0](viewer),)
    return tuple(keyer(viewer) for keyer in keyers)


# An event waiting in a group's backlog: the event, its payloads (in `recent` too), its contexts
# (loaders shared by the groups that execute it).
Backlogged = tuple[Event, dict[PayloadKey, bytes], dict[Hashable, Any]]


class Group:
    """The subscribers of one selection in one feed, executed once per event (per audience).

    Whose work it is: its `account`, the one user in it, or the group itself when several users
    share it (the web client's selection, say), weighing as many users as it serves. Time spent
    on it inline and in the background share is charged to that account, so one user's many
    selections are scheduled as that user's, and never ahead of a selection that many share."""

    __slots__ = ("audiences", "backlog", "cost", "event_id", "key", "kinds", "selection", "subscriptions", "users")

    def __init__(self, subscription: Subscription, audiences: tuple[Audience, ...], cost: float = 0.0) -> None:
        source = subscription.source
        self.key = subscription.key
        self.selection = subscription.selection
        self.audiences = audiences
        self.kinds = source.kinds
        self.event_id = source.event_id
        self.subscriptions: set[Subscription] = set()
        self.users: dict[int, int] = {}  # each user's subscriptions in it
        self.cost = cost  # seconds an event's execution takes (a moving average)
        # Events delivered to the feed and not yet to this group, in order (live.logged).
        self.backlog: deque[Backlogged] = deque()

    def add(self, subscription: Subscription) -> None:
        if subscription not in self.subscriptions:
            self.subscriptions.add(subscription)
            user = subscription.viewer.id
            self.users[user] = self.users.get(user, 0) + 1

    def discard(self, subscription: Subscription) -> None:
        if subscription in self.subscriptions:
            self.subscriptions.discard(subscription)
            user = subscription.viewer.id
            left = self.users[user] - 1
            if left:
                self.users[user] = left
            else:
                del self.users[user]

    @property
    def account(self) -> Hashable:
        if len(self.users) == 1:
            return next(iter(self.users))
        return self

    @property
    def weight(self) -> int:
        return max(1, len(self.users))

    @property
    def charge(self) -> float:
        """What an event's execution costs each user it serves."""
        return self.cost / self.weight

    def measured(self, seconds: float) -> float:
        self.cost = seconds if self.cost == 0.0 else 0.7 * self.cost + 0.3 * seconds
        return self.cost

    def by_audience(self, event: Event) -> Iterable[tuple[tuple[Hashable, ...], list[Subscription]]]:
        """The subscribers, split by what they see of this event (all together when nothing in
        the selection depends on who asks)."""
        keyers = keyers_for(self.audiences, event) if self.audiences else None
        if not keyers:
            return [((), list(self.subscriptions))]
        if len(self.subscriptions) == 1:  # one subscriber (a following feed's, say): one part
            (subscription,) = self.subscriptions
            return [(audience_key(keyers, subscription.viewer), [subscription])]
        buckets: dict[tuple[Hashable, ...], list[Subscription]] = {}
        for subscription in self.subscriptions:
            buckets.setdefault(audience_key(keyers, subscription.viewer), []).append(subscription)
        return buckets.items()

    def wants(self, event: Event) -> bool:
        return self.kinds is None or event.get("kind") in self.kinds


def fields_read(
    schema: GraphQLSchema, document: DocumentNode, coordinates: frozenset[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of `coordinates` (type, field) the document selects."""
    type_info = TypeInfo(schema)
    found: set[tuple[str, str]] = set()

    class Finder(Visitor):
        def enter_field(self, node: FieldNode, *_args: Any) -> None:
            parent = type_info.get_parent_type()
            if parent is not None and (coordinate := (get_named_type(parent).name, node.name.value)) in coordinates:
                found.add(coordinate)

    visit(document, TypeInfoVisitor(type_info, Finder()))
    return found
