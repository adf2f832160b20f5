"""graphql-core's executor with a short path for plain selections: a list of objects, or one
object, whose selected fields are scalars, enums, or objects whose own fields are so in turn
(`rooms { id unreadCount lastMessage { body sender { name } } }`, a message's `reactions`, a
`myRooms` note's room).

graphql-core completes each item of a list through seven calls before its first field, and each
field through as many again. Here the fields of such a selection are planned once (resolver,
arguments, scalar, or the plan of an object's own fields; kept for the parsed document where
no variable can change them), and each item is one loop over them. Whenever an item is
anything but plain (a resolver raises, null where null is not allowed, an awaitable, a value
its scalar refuses, an object that is not a mapping), the whole list or object goes the usual
way instead, its resolvers run again, so errors, nulls and awaitables behave exactly as
graphql-core's. Only synchronous resolvers are planned: a planned field's resolver is a read.

And each copy for a subscription's event starts with empty memos: graphql-core's copies share
the executor's memo of collected subfields, keyed by the lists each event collects anew, so an
executor kept for a long-lived subscription grew with every event it served.

This is the one module reaching into graphql-core's executor (its completion methods and memos
are not its public API); tests/test_library_reaches.py fails loudly when graphql-core changes
under it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from inspect import iscoroutinefunction
from types import CoroutineType, GeneratorType
from typing import Any, NamedTuple, TypeVar, cast

from graphql import (
    Executor,
    FieldNode,
    GraphQLBoolean,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLString,
    OperationType,
    Undefined,
    default_field_resolver,
    is_leaf_type,
    is_non_null_type,
    is_object_type,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet, collect_fields
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path, RefMap

from core.reaches import written_against

WRITTEN_AGAINST = written_against("graphql-core")
R = TypeVar("R", bound=Callable[..., Any])
PLAIN = frozenset((int, str, float, bool))
PATH = GraphQLResolveInfo._fields.index("path")
# Where a resolve info's root value and context are, in what follows its path.
ROOT_VALUE = GraphQLResolveInfo._fields.index("root_value") - PATH - 1
CONTEXT = GraphQLResolveInfo._fields.index("context") - PATH - 1
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


def _no_coercion(value: Any) -> Any:
    """An object field's: its value is completed by its own plan, never coerced."""
    return value


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


def _with_event(tail: tuple, event: tuple[Any, Any]) -> list[Any]:
    """A resolve info's fields after its path, with an event's root value and context."""
    values = list(tail)
    values[ROOT_VALUE], values[CONTEXT] = event
    return values


def _plain_subfields(nodes: Iterable[Any]) -> bool:
    """Whether what is selected under these nodes, at every depth, is fields alone, none with a
    directive: then graphql-core collects the same subfields for every execution, whatever its
    variables."""
    return all(
        not node.directives
        and all(
            isinstance(selection, FieldNode) and _plain_subfields((selection,))
            for selection in (node.selection_set.selections if node.selection_set else ())
        )
        for node in nodes
    )


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
    arguments: dict[str, Any] | None  # None until this execution's variables give them
    passes: type | None  # values of this type the scalar returns as they are (graphql-core's own)
    coerce: Callable[[Any], Any]  # the scalar's or enum's output coercion
    nullable: bool
    definition: GraphQLField
    nodes: list[FieldNode]
    sub: FlatList | None = None  # an object field's own fields (None: a scalar or an enum)


class Read(NamedTuple):
    """A field answered by reading a key of its object, as the default resolver (or one that
    `reads` the key) answers it."""

    name: str
    key: str
    passes: type | None  # values of this type the scalar returns as they are
    coerce: Callable[[Any], Any]  # the scalar's or enum's output coercion, for any other value
    nullable: bool
    sub: tuple[Read, ...] | None  # an object field's own fields, read alike (None: a scalar or an enum)


_INERT: dict[type, bool] = {}


def _inert(kind: type) -> bool:
    """Whether a value of this type is a value and nothing else: never an error, an awaitable or
    a callable (those the usual path treats apart); asked once per type."""
    known = _INERT.get(kind)
    if known is None:
        known = _INERT[kind] = not (
            issubclass(kind, BaseException)
            or issubclass(kind, GeneratorType)  # a generator-based coroutine is awaitable
            or any("__call__" in vars(base) or "__await__" in vars(base) for base in kind.__mro__)
        )
    return known


def _read(reads: tuple[Read, ...], item: Any) -> dict[str, Any] | None:
    """An object's completed fields where every one of them reads a key of it (its objects' own
    fields alike), each value plain and what its scalar or enum coerces it to no null; None
    where any is otherwise: then the object takes `_complete_fields`, which answers as
    graphql-core does (from the same keys: reading them changes nothing)."""
    data: dict[str, Any] = {}
    for name, key, passes, coerce, nullable, sub in reads:
        if key not in item:
            return None
        value = item[key]
        value_type = type(value)
        if value_type is passes:
            if value_type is int and not MIN_INT <= value <= MAX_INT:
                return None
        elif value is None:
            if not nullable:
                return None
        elif sub is not None:
            if value_type is not dict and not _reads_as_mapping(value_type):
                return None
            value = _read(sub, value)
            if value is None:
                return None
        elif value_type in PLAIN or _inert(value_type):
            try:
                value = coerce(value)
            except Exception:
                return None
            if value is None or value is Undefined:
                return None
        else:
            return None
        data[name] = value
    return data


_REFUSED = object()  # a leaf whose value is not plain (LeanExecutor._leaf)


class FlatList(NamedTuple):
    """The plan of an object's selected fields: a list's items', or one object's."""

    item_type: GraphQLObjectType
    items_nullable: bool
    fields: list[PlannedField]
    # Where every field, at every depth, reads a key: how each reads it (`_read`), for items
    # whose every value is plain; any other item takes `fields`.
    reads: tuple[Read, ...] | None = None
    # Every field's arguments given, at every depth: the plan serves as it is.
    given: bool = True


class Patch(NamedTuple):
    """A field of a subscription's plan that one viewer's execution may answer differently from
    another's (`LeanExecutor.patched`): a leaf whose value is the viewer's own, or an object on
    the way to such leaves, re-resolved for each viewer for them (and for whether it is null)."""

    field: PlannedField
    item_type: GraphQLObjectType
    sub: tuple[Patch, ...] | None  # an object's own patches (None: a leaf, written as it comes)


# Plans of selections whose subfields are plain fields (no fragment, no directive: nothing in
# them depends on an execution's variables), for every execution of the same parsed document:
# by the list's type, the executor's default resolver and the list's field nodes, all kept so
# their ids stay theirs. Arguments are given per execution.
_static_plans: dict[tuple[int, ...], tuple[tuple[Any, ...], FlatList]] = {}
STATIC_PLANS = 1024


class LeanExecutor(Executor):
    """Executes as graphql-core's Executor does; flat lists take the short path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flat_lists: dict[tuple[GraphQLOutputType, int], tuple[FieldDetailsList, FlatList | None]] = {}
        self.flat_lists_completed = 0  # seen by the tests that the short path still runs
        self.objects_completed = 0
        self.events_planned = 0
        # The plan of a subscription's root fields (its document and variables are every
        # event's), made at its first event: [] until then.
        self._root_plan: list[FlatList | None] = []
        # Its fields' resolve infos but for the path, root value and context (every event's).
        self._event_infos: dict[int, tuple[tuple, tuple]] = {}
        # Its root plan's patches (`patches`), made once: [] until then.
        self._root_patches: list[tuple[Patch, ...] | None] = []

    def __copy__(self) -> LeanExecutor:
        """The shallow copy `copy.copy` makes (graphql-core copies its executor for each event,
        and the live engine executes an event once per viewer whose answer differs), without
        the generic protocol's reduce and reconstruct."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def build_per_event_executor(self, payload: Any) -> LeanExecutor:
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, LeanExecutor)
        executor._relevant_sub_fields = {}
        executor._stream_usages = RefMap()
        executor._flat_lists = {}
        return executor

    def planned_event(self, event: Any, context: Any) -> dict[str, Any] | None:
        """A subscription event's data by the short path, on the executor built for the
        subscription (no per-event copy: nothing here keeps state of an execution), when its
        root fields are planned (each a scalar, an enum or a plain object, its resolver
        synchronous): each root resolver called, its value completed as a flat object's. None
        where that does not serve (a plan refused, or anything in this event's values not
        plain): the caller then executes the event as graphql-core does, its resolvers called
        again, so errors, nulls and awaitables come out exactly as there."""
        if not self._root_plan:  # planned on a copy: what collecting memoizes is not kept here
            self._root_plan.append(self.build_per_event_executor(None)._root_planned())
        plan = self._root_plan[0]
        if plan is None:
            return None
        kind = type(event)
        readable = kind is dict or _reads_as_mapping(kind)
        data = self._complete_fields(plan, event, readable, cast(Path, None), None, self._event_infos, (event, context))
        if data is not None:
            self.events_planned += 1
        return data

    def patches(
        self, viewer_fields: frozenset[tuple[str, str]], shells: frozenset[tuple[str, str]]
    ) -> tuple[Patch, ...] | None:
        """What `patched` writes for each viewer: the root plan's fields (type, field) in
        `viewer_fields` (those whose value depends on who asks), each a leaf, or an object in
        `shells` (one whose value depends on who asks only in whether it is null and in the
        viewer fields under it), and the objects on the way to them. None where the plan is
        not made, or where it selects an object that depends on who asks and is no shell (its
        whole value is the viewer's own: each viewer's execution is needed). The same two sets
        on every call: an engine's (made once, kept)."""
        if not self._root_patches:
            plan = self._root_plan[0] if self._root_plan else None
            self._root_patches.append(None if plan is None else _patches_of(plan, viewer_fields, shells))
        return self._root_patches[0]

    def patched(self, data: dict[str, Any], patches: tuple[Patch, ...], event: Any, context: Any) -> bool:
        """`data`, an event's result by `planned_event` for one viewer, made another's: each of
        `patches` resolved for this `context`'s viewer and written into it in place (what else it
        holds is every viewer's). False where that cannot be (a value that is not plain, an
        object null for one viewer and not for the other, an error): then `data` is partly
        written, and this viewer's result is to be executed in full."""
        return self._patch(patches, event, True, data, None, self._event_infos, (event, context))

    def _patch(
        self,
        patches: tuple[Patch, ...],
        item: Any,
        readable: bool,
        data: dict[str, Any],
        path: Path | None,
        infos: dict[int, tuple[tuple, tuple]],
        event: tuple[Any, Any],
    ) -> bool:
        """`patched` for one object (`item`) and its completed fields (`data`), as
        `_complete_fields` completes them."""
        for field, item_type, sub in patches:
            name, resolve, key, arguments, passes, coerce, nullable, definition, nodes, _ = field
            try:
                if key is not None and readable and key in item:
                    value = item[key]
                    if callable(value):
                        return False
                else:
                    parts = infos.get(id(field))
                    if parts is None:
                        made = self.build_resolve_info(definition, nodes, item_type, cast(Path, path))
                        parts = infos[id(field)] = (made[:PATH], made[PATH + 1 :])
                    info = new_tuple(
                        GraphQLResolveInfo,
                        (*parts[0], Path(path, name, item_type.name), *_with_event(parts[1], event)),
                    )
                    value = resolve(item, info, **arguments) if arguments else resolve(item, info)
                if sub is not None:
                    present = data.get(name)
                    if value is None and present is None:
                        continue
                    value_type = type(value)
                    mapping = value_type is dict or _reads_as_mapping(value_type)
                    if present is None or value is None or not mapping:
                        if isinstance(value, CoroutineType):
                            value.close()  # never started: the usual path calls the resolver again
                        return False
                    if not self._patch(sub, value, True, present, Path(path, name, item_type.name), infos, event):
                        return False
                    continue
                value_type = type(value)
                if value_type is not passes or (value_type is int and not MIN_INT <= value <= MAX_INT):
                    value = self._leaf(value, value_type, coerce, nullable)
                    if value is _REFUSED:
                        return False
            except Exception:
                return False
            data[name] = value
        return True

    def _leaf(self, value: Any, value_type: type, coerce: Callable[[Any], Any], nullable: bool) -> Any:
        """A leaf's value as its scalar or enum completes it, where it is not one the scalar
        returns as it is; _REFUSED where it is not plain (null where null is not allowed, an
        error, an awaitable, a value its scalar refuses: the usual path then answers)."""
        if value_type not in PLAIN:
            if value is None:
                return None if nullable else _REFUSED
            if isinstance(value, Exception):
                return _REFUSED
            if self.is_awaitable(value):
                if isinstance(value, CoroutineType):
                    value.close()  # never started: the usual path calls the resolver again
                return _REFUSED
        value = coerce(value)
        return _REFUSED if value is None or value is Undefined else value

    def _root_planned(self) -> FlatList | None:
        """The plan of a subscription's root fields, their arguments given (this executor's
        variables are every event's); None where they are not all plain."""
        operation = self.operation
        if (
            operation.operation != OperationType.SUBSCRIPTION
            or self.middleware_manager is not None
            or self.hooks is not None
            or self.abort_signal is not None
        ):
            return None
        root_type = self.schema.subscription_type
        if root_type is None:
            return None
        try:
            grouped_field_set, defer_usages, _ = collect_fields(
                self.schema, self.fragments, self.variable_values, root_type, operation, self.hide_suggestions
            )
            plan = None if defer_usages else self._fields_planned(root_type, False, grouped_field_set, None)
        except Exception:  # the usual path reports it, where it belongs
            return None
        return None if plan is None else self._with_arguments(plan)

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
            self._unplanned(item_type, field_details_list)
        return super().complete_iterable_value(item_type, field_details_list, info, path, items, position_context)

    def _unplanned(self, item_type: GraphQLOutputType, field_details_list: FieldDetailsList) -> None:
        """A plan that did not serve (an awaitable in it, say) is not tried again in this execution:
        each item of the list, or each object the field gives, would try it only to go the usual
        way after all."""
        object_type = item_type.of_type if is_non_null_type(item_type) else item_type
        for kind in (item_type, object_type):
            self._flat_lists[(kind, id(field_details_list))] = (field_details_list, None)

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        kind = type(result)
        if kind is dict or _reads_as_mapping(kind):
            plan = self._plan(return_type, field_details_list, path)
            if plan is not None:
                completed = self._complete_fields(plan, result, True, path, None, {})
                if completed is not None:
                    self.objects_completed += 1
                    return completed
                self._unplanned(return_type, field_details_list)
        return super().complete_object_value(return_type, field_details_list, info, path, result, position_context)

    def _complete_flat(self, plan: FlatList, path: Path, items: list[Any]) -> list[Any] | None:
        """The completed list, or None where any item is not plain."""
        items_nullable = plan.items_nullable
        infos: dict[int, tuple[tuple, tuple]] = {}  # a field's resolve info around its path, made once per list
        completed: list[Any] = []
        known: type | None = None  # the items' type, once seen to be read by key
        for index, item in enumerate(items):
            kind = type(item)
            readable = kind is known or kind is dict or _reads_as_mapping(kind)
            if readable:
                known = kind
            else:
                if item is None and items_nullable:
                    completed.append(None)
                    continue
                if item is None or isinstance(item, Exception) or self.is_awaitable(item):
                    return None
            fields = self._complete_fields(plan, item, readable, path, index, infos)
            if fields is None:
                return None
            completed.append(fields)
        return completed

    def _complete_fields(
        self,
        plan: FlatList,
        item: Any,
        readable: bool,
        path: Path,
        index: int | None,
        infos: dict[int, tuple[tuple, tuple]],
        event: tuple[Any, Any] | None = None,
    ) -> dict[str, Any] | None:
        """One object's completed fields, or None where anything in it is not plain. `path` is
        the list's (the item's is `index` in it) or, `index` None, the object's own (None: the
        root's). `event`: the root value and context of an execution that is not this
        executor's own (`planned_event`)."""
        if readable and plan.reads is not None:
            read = _read(plan.reads, item)
            if read is not None:
                return read
        type_name = plan.item_type.name
        item_path: Path | None = path if index is None else None
        data: dict[str, Any] = {}
        for field in plan.fields:
            name, resolve, key, arguments, passes, coerce, nullable, definition, nodes, sub = field
            try:
                if key is not None and readable and key in item:
                    value = item[key]  # what the default resolver (or one that `reads` it) answers
                    if callable(value):
                        return None  # the default resolver calls it
                else:
                    parts = infos.get(id(field))
                    if parts is None:
                        made = self.build_resolve_info(definition, nodes, plan.item_type, path)
                        parts = infos[id(field)] = (made[:PATH], made[PATH + 1 :])
                    if item_path is None and index is not None:
                        item_path = Path(path, index, None)
                    tail = parts[1] if event is None else _with_event(parts[1], event)
                    info = new_tuple(GraphQLResolveInfo, (*parts[0], Path(item_path, name, type_name), *tail))
                    value = resolve(item, info, **arguments) if arguments else resolve(item, info)
                if sub is not None:  # an object: its own fields, planned alike
                    if value is None:
                        if not nullable:
                            return None
                        data[name] = None
                        continue
                    value_type = type(value)
                    if value_type is not dict and not _reads_as_mapping(value_type):
                        if isinstance(value, CoroutineType):
                            value.close()  # never started: the usual path calls the resolver again
                        return None
                    if item_path is None and index is not None:
                        item_path = Path(path, index, None)
                    completed = self._complete_fields(
                        sub, value, True, Path(item_path, name, type_name), None, infos, event
                    )
                    if completed is None:
                        return None
                    data[name] = completed
                    continue
                value_type = type(value)
                if value_type is passes and (value_type is not int or MIN_INT <= value <= MAX_INT):
                    data[name] = value  # what the scalar's coercion returns as it is
                    continue
                value = self._leaf(value, value_type, coerce, nullable)
            except Exception:
                return None
            if value is _REFUSED:
                return None
            data[name] = value
        return data

    def _plan(self, item_type: GraphQLOutputType, field_details_list: FieldDetailsList, path: Path) -> FlatList | None:
        key = (item_type, id(field_details_list))
        cached = self._flat_lists.get(key)
        if cached is None:
            cached = self._flat_lists[key] = (field_details_list, self._planned(item_type, field_details_list, path))
        return cached[1]

    def _planned(
        self, item_type: GraphQLOutputType, field_details_list: FieldDetailsList, path: Path
    ) -> FlatList | None:
        if self.middleware_manager is not None:
            return None
        identity = (item_type, self.field_resolver, *(details.node for details in field_details_list))
        key = tuple(map(id, identity))
        kept = _static_plans.get(key)
        if kept is not None and all(map(operator.is_, kept[0], identity)):
            return self._with_arguments(kept[1])
        plan = self._collected(item_type, field_details_list, path)
        if plan is not None and _plain_subfields(identity[2:]):
            if len(_static_plans) >= STATIC_PLANS:
                _static_plans.clear()
            _static_plans[key] = (identity, plan)
        return None if plan is None else self._with_arguments(plan)

    def _with_arguments(self, plan: FlatList) -> FlatList | None:
        """The plan with this execution's arguments for the fields that take some, at any depth."""
        if plan.given:
            return plan
        fields = []
        for field in plan.fields:
            if field.sub is not None:
                sub = self._with_arguments(field.sub)
                if sub is None:
                    return None
                field = field._replace(sub=sub)
            if field.arguments is None:
                first = field.nodes[0]
                try:
                    arguments = get_argument_values(
                        field.definition, first, self.variable_values, None, self.hide_suggestions
                    )
                except Exception:  # the usual path reports it, where it belongs
                    return None
                field = field._replace(arguments=arguments)
            fields.append(field)
        return plan._replace(fields=fields, given=True)

    def _collected(
        self, item_type: GraphQLOutputType, field_details_list: FieldDetailsList, path: Path
    ) -> FlatList | None:
        """The plan as graphql-core collects the subfields, arguments left for `_with_arguments`."""
        nullable = not is_non_null_type(item_type)
        object_type = item_type if nullable else cast(GraphQLNonNull, item_type).of_type
        if (
            not is_object_type(object_type)
            or object_type.is_type_of is not None
            or self.get_stream_usage(field_details_list, path) is not None
        ):
            return None
        grouped_field_set, defer_usages, _ = self.collect_subfields(object_type, field_details_list)
        if defer_usages:
            return None
        return self._fields_planned(object_type, nullable, grouped_field_set, path)

    def _fields_planned(
        self, object_type: GraphQLObjectType, nullable: bool, grouped_field_set: GroupedFieldSet, path: Path | None
    ) -> FlatList | None:
        """The plan of an object's collected fields, arguments left for `_with_arguments`."""
        fields = []
        for name, details in grouped_field_set.items():
            first = details[0]
            definition = self.schema.get_field(object_type, first.node.name.value)
            if definition is None:
                return None
            field_nullable = not is_non_null_type(definition.type)
            scalar = definition.type if field_nullable else cast(GraphQLNonNull, definition.type).of_type
            resolve = definition.resolve or self.field_resolver
            if iscoroutinefunction(resolve) or first.fragment_variable_values:
                return None
            sub = None
            if not is_leaf_type(scalar):
                # An object's own fields, planned alike (a list or an abstract type is not planned).
                field_path = Path(path, name, object_type.name)
                sub = self._collected(scalar, details, field_path) if is_object_type(scalar) else None
                if sub is None:
                    return None
            key = first.node.name.value if resolve is default_field_resolver else getattr(resolve, READS, None)
            fields.append(
                PlannedField(
                    name,
                    resolve,
                    key,
                    None if definition.args or first.node.arguments else {},
                    PASSES.get(scalar),
                    COERCIONS.get(scalar, cast(Any, scalar).coerce_output_value) if sub is None else _no_coercion,
                    field_nullable,
                    definition,
                    [d.node for d in details],
                    sub,
                )
            )
        reads = tuple(
            Read(field.name, key, field.passes, field.coerce, field.nullable, field.sub.reads if field.sub else None)
            for field in fields
            if (key := field.key) is not None and (field.sub is None or field.sub.reads is not None)
        )
        given = all(field.arguments is not None and (field.sub is None or field.sub.given) for field in fields)
        return FlatList(object_type, nullable, fields, reads if len(reads) == len(fields) else None, given)


def _patches_of(
    plan: FlatList, viewer_fields: frozenset[tuple[str, str]], shells: frozenset[tuple[str, str]]
) -> tuple[Patch, ...] | None:
    """`LeanExecutor.patches` for one object's plan."""
    found: list[Patch] = []
    for field in plan.fields:
        coordinate = (plan.item_type.name, field.nodes[0].name.value)
        if field.sub is None:
            if coordinate in viewer_fields:
                found.append(Patch(field, plan.item_type, None))
            continue
        shell = coordinate in shells
        if coordinate in viewer_fields and not shell:
            return None
        sub = _patches_of(field.sub, viewer_fields, shells)
        if sub is None:
            return None
        if sub or shell:
            found.append(Patch(field, plan.item_type, sub))
    return tuple(found)
