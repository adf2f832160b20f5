"""graphql-core's executor with a short path for flat lists: a list of objects whose selected
fields are all scalars or enums (`rooms { id unreadCount }`, a message's `reactions`).

graphql-core completes each item of a list through seven calls before its first field, and each
field through as many again. Here the fields of such a list are planned once per list (resolver,
arguments, scalar), and each item is one loop over them. Whenever an item is anything but plain
(a resolver raises, null where null is not allowed, an awaitable, a value its scalar refuses),
the whole list goes the usual way instead, its resolvers run again, so errors, nulls and awaitables behave exactly as
graphql-core's. Only synchronous resolvers are planned: a scalar field's resolver is a read.

And each copy for a subscription's event starts with empty memos: graphql-core's copies share
the executor's memo of collected subfields, keyed by the lists each event collects anew, so an
executor kept for a long-lived subscription grew with every event it served.

This is the one module reaching into graphql-core's executor (its completion methods and memos
are not its public API); tests/test_library_reaches.py fails loudly when graphql-core changes
under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from inspect import iscoroutinefunction
from types import CoroutineType
from typing import Any, NamedTuple, TypeVar, cast

from graphql import (
    Executor,
    GraphQLBoolean,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLString,
    Undefined,
    default_field_resolver,
    is_leaf_type,
    is_non_null_type,
    is_object_type,
)
from graphql.execution.collect_fields import FieldDetailsList
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path, RefMap

WRITTEN_AGAINST = "3.3.2"
R = TypeVar("R", bound=Callable[..., Any])
PLAIN = frozenset((int, str, float, bool))
PATH = GraphQLResolveInfo._fields.index("path")
# Values the built-in scalars return as they are (Int: within 32 bits).
PASSES: dict[Any, type] = {
    GraphQLInt: int,
    GraphQLString: str,
    GraphQLBoolean: bool,
    GraphQLID: str,
    GraphQLFloat: float,
}
MIN_INT, MAX_INT = -(2**31), 2**31 - 1


def _id_output(value: Any) -> Any:
    """GraphQLID's output coercion, with an int (a row's key) taken first: what it returns for one."""
    return str(value) if type(value) is int else GraphQLID.coerce_output_value(value)


# Output coercions taken instead of a built-in scalar's own, returning what it would.
COERCIONS: dict[Any, Callable[[Any], Any]] = {GraphQLID: _id_output}
READS = "__reads_key__"
new_tuple = tuple.__new__


_MAPPINGS: dict[type, bool] = {}


def _reads_as_mapping(kind: type) -> bool:
    """Whether graphql-core's default resolver reads this type's items by key (a Mapping, such as
    a database row left as the driver made it); asked once per type, an ABC's check being slow."""
    known = _MAPPINGS.get(kind)
    if known is None:
        known = _MAPPINGS[kind] = issubclass(kind, Mapping)
    return known


def reads(key: str) -> Callable[[R], R]:
    """Marks a resolver whose answer, for a mapping holding `key`, is that key's value: a flat list
    reads it as the default resolver would, and calls the resolver only where the key is absent."""

    def mark(resolver: R) -> R:
        setattr(resolver, READS, key)
        return resolver

    return mark


class PlannedField(NamedTuple):
    name: str
    resolve: Callable[..., Any]
    key: str | None  # read straight from a dict: the field's name, where its resolver is the default
    arguments: dict[str, Any]
    # The field's resolve info around its path (built by graphql-core once, the path set per item).
    info_head: tuple
    info_tail: tuple
    passes: type | None  # values of this type the scalar returns as they are (graphql-core's own)
    coerce: Callable[[Any], Any]  # the scalar's or enum's output coercion
    nullable: bool


class FlatList(NamedTuple):
    item_type: GraphQLObjectType
    items_nullable: bool
    fields: list[PlannedField]


class LeanExecutor(Executor):
    """Executes as graphql-core's Executor does; flat lists take the short path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flat_lists: dict[tuple[GraphQLOutputType, int], tuple[FieldDetailsList, FlatList | None]] = {}
        self.flat_lists_completed = 0  # seen by the test that the short path still runs

    def build_per_event_executor(self, payload: Any) -> LeanExecutor:
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, LeanExecutor)
        executor._relevant_sub_fields = {}
        executor._stream_usages = RefMap()
        executor._flat_lists = {}
        return executor

    def complete_iterable_value(
        self,
        item_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo,
        path: Path,
        items: Iterable[Any],
        position_context: Any,
    ) -> Any:
        plan = self._plan(item_type, field_details_list, path) if type(items) is list else None
        if plan is not None:
            completed = self._complete_flat(plan, path, cast(list, items))
            if completed is not None:
                self.flat_lists_completed += 1
                return completed
        return super().complete_iterable_value(item_type, field_details_list, info, path, items, position_context)

    def _complete_flat(self, plan: FlatList, path: Path, items: list[Any]) -> list[Any] | None:
        """The completed list, or None where any item is not plain."""
        item_type, items_nullable, fields = plan
        type_name = item_type.name
        completed: list[Any] = []
        for index, item in enumerate(items):
            readable = type(item) is dict or _reads_as_mapping(type(item))
            if not readable:
                if item is None and items_nullable:
                    completed.append(None)
                    continue
                if item is None or isinstance(item, Exception) or self.is_awaitable(item):
                    return None
            item_path = None
            data: dict[str, Any] = {}
            for name, resolve, key, arguments, info_head, info_tail, passes, coerce, nullable in fields:
                try:
                    if key is not None and readable and key in item:
                        value = item[key]  # what the default resolver (or one that `reads` it) answers
                        if callable(value):
                            return None  # the default resolver calls it
                    else:
                        item_path = item_path or Path(path, index, None)
                        info = new_tuple(GraphQLResolveInfo, (*info_head, Path(item_path, name, type_name), *info_tail))
                        value = resolve(item, info, **arguments) if arguments else resolve(item, info)
                    value_type = type(value)
                    if value_type is passes and (value_type is not int or MIN_INT <= value <= MAX_INT):
                        data[name] = value  # what the scalar's coercion returns as it is
                        continue
                    if value_type not in PLAIN:
                        if value is None and nullable:
                            data[name] = None
                            continue
                        if value is None or isinstance(value, Exception):
                            return None
                        if self.is_awaitable(value):
                            if isinstance(value, CoroutineType):
                                value.close()  # never started: the usual path calls the resolver again
                            return None
                    value = coerce(value)
                except Exception:
                    return None
                if value is None or value is Undefined:
                    return None
                data[name] = value
            completed.append(data)
        return completed

    def _plan(self, item_type: GraphQLOutputType, field_details_list: FieldDetailsList, path: Path) -> FlatList | None:
        key = (item_type, id(field_details_list))
        cached = self._flat_lists.get(key)
        if cached is None:
            cached = self._flat_lists[key] = (field_details_list, self._planned(item_type, field_details_list, path))
        return cached[1]

    def _planned(
        self, item_type: GraphQLOutputType, field_details_list: FieldDetailsList, path: Path
    ) -> FlatList | None:
        nullable = not is_non_null_type(item_type)
        object_type = item_type if nullable else cast(GraphQLNonNull, item_type).of_type
        if (
            not is_object_type(object_type)
            or object_type.is_type_of is not None
            or self.middleware_manager is not None
            or self.get_stream_usage(field_details_list, path) is not None
        ):
            return None
        grouped_field_set, defer_usages, _ = self.collect_subfields(object_type, field_details_list)
        if defer_usages:
            return None
        fields = []
        for name, details in grouped_field_set.items():
            first = details[0]
            definition = self.schema.get_field(object_type, first.node.name.value)
            if definition is None:
                return None
            field_nullable = not is_non_null_type(definition.type)
            scalar = definition.type if field_nullable else cast(GraphQLNonNull, definition.type).of_type
            resolve = definition.resolve or self.field_resolver
            if not is_leaf_type(scalar) or iscoroutinefunction(resolve):
                return None
            try:
                arguments = (
                    get_argument_values(
                        definition,
                        first.node,
                        self.variable_values,
                        first.fragment_variable_values,
                        self.hide_suggestions,
                    )
                    if definition.args or first.node.arguments
                    else {}
                )
            except Exception:  # the usual path reports it, where it belongs
                return None
            info = self.build_resolve_info(definition, [d.node for d in details], object_type, path)
            key = first.node.name.value if resolve is default_field_resolver else getattr(resolve, READS, None)
            fields.append(
                PlannedField(
                    name,
                    resolve,
                    key,
                    arguments,
                    info[:PATH],
                    info[PATH + 1 :],
                    PASSES.get(scalar),
                    COERCIONS.get(scalar, scalar.coerce_output_value),
                    field_nullable,
                )
            )
        return FlatList(object_type, nullable, fields)
