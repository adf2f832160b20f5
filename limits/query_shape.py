"""Validation rules that refuse a hostile document before any resolver runs.

Both walk every field a document selects, fragments expanded, introspection (`__schema`,
`__type`) included: nothing is exempt. Depth and size depend only on the document, so they are
cached with it; the cost reads `first` (and introspection's arguments) from the variables, and
so runs again for each new value of those.

The cost bounds the values an answer can hold, one per field of each object resolved:

- a field costs 1 plus the cost of its selection;
- a bounded list (its longest page given by the resolvers: `list_bounds`) costs 1 plus `first`
  times its selection, and `first` absent, null or out of range counts as the list's maximum,
  not its default: the default is what a resolver does, the maximum is what a client can make
  it do. Nested lists multiply;
- introspection is answered from the static schema, so its lists are counted by what they hold:
  the meta-fields are resolved (graphql-core's own resolvers, on schema objects, no I/O) and
  counted one per value, and the count stops as soon as it passes the limit, so counting a bomb
  costs no more than the limit.

A subscription's selection runs once per event, so a subscription has a lower limit of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLType,
    SchemaMetaFieldDef,
    TypeMetaFieldDef,
    ValidationRule,
    get_named_type,
    get_nullable_type,
    is_composite_type,
)
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
)
from graphql.pyutils import Undefined
from graphql.utilities import value_from_ast

from execution.documents import VariableRule

# A list field's longest page, by (type, field): given by the resolvers (resolvers.LIST_BOUNDS).
ListBounds = Mapping[tuple[str, str], int]
INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
TOO_COMPLEX = "QUERY_TOO_COMPLEX"


def _expanded(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    depth: int,
    budget: list[int],
    visiting: frozenset[str] = frozenset(),
) -> tuple[int, int, int]:
    """(deepest field depth, fields, aliases) of a selection set whose fields sit at `depth`,
    fragments expanded, inside introspection as anywhere else. `budget` stops the walk early on
    documents built to explode through fragment reuse."""
    if selection_set is None or budget[0] <= 0:
        return 0, 0, 0
    deepest = fields = aliases = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            budget[0] -= 1
            sub = _expanded(selection.selection_set, fragments, depth + 1, budget, visiting)
            deepest = max(deepest, depth, sub[0])
            fields += 1 + sub[1]
            aliases += (selection.alias is not None) + sub[2]
            continue
        if isinstance(selection, InlineFragmentNode):
            inner, inner_visiting = selection.selection_set, visiting
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is None or name in visiting:  # unknown or cyclic: graphql-core reports it
                continue
            inner, inner_visiting = fragment.selection_set, visiting | {name}
        else:
            continue
        sub = _expanded(inner, fragments, depth, budget, inner_visiting)
        deepest = max(deepest, sub[0])
        fields += sub[1]
        aliases += sub[2]
    return deepest, fields, aliases


def shape_rule(max_depth: int, max_fields: int, max_aliases: int) -> type[ValidationRule]:
    class QueryShapeRule(ValidationRule):
        def enter_document(self, node: DocumentNode, *_args: Any) -> None:
            fragments = _fragments(node)
            for definition in node.definitions:
                if not isinstance(definition, OperationDefinitionNode):
                    continue
                budget = [max_fields + 1]
                depth, fields, aliases = _expanded(definition.selection_set, fragments, 1, budget)
                if budget[0] <= 0 or fields > max_fields:
                    self.report(f"The query selects more than {max_fields} fields.")
                elif depth > max_depth:
                    self.report(f"The query is deeper than {max_depth} levels.")
                elif aliases > max_aliases:
                    self.report(f"The query uses more than {max_aliases} aliases.")

        def report(self, message: str) -> None:
            self.report_error(GraphQLError(message, extensions={"code": TOO_COMPLEX}))

    return QueryShapeRule


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


# The arguments whose values the cost reads: the only way it depends on the variables.
COST_ARGUMENTS = frozenset({"first", "name", "includeDeprecated"})


class _Exceeded(Exception):
    """The count passed the limit: no need to count further."""


@dataclass
class _Info:
    """What graphql-core's introspection resolvers read of their `info`."""

    schema: GraphQLSchema
    parent_type: GraphQLNamedType


class _Cost:
    """One operation's cost, counted against `limit` (raises _Exceeded as soon as it passes)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
        limit: int,
        introspection_limit: int,
        list_bounds: ListBounds,
    ) -> None:
        self.schema = schema
        self.list_bounds = list_bounds
        self.fragments = fragments
        self.variables = variables
        self.limit = limit
        self.introspection_limit = min(limit, introspection_limit)
        self.introspected_values = 0
        self.cost = 0

    def add(self, cost: int) -> None:
        """Charges introspected values as they are counted: counting stops past the limit."""
        self.introspected_values += cost
        if self.introspected_values > self.introspection_limit:
            raise _Exceeded

    def within(self, root: GraphQLNamedType | None, selection_set: SelectionSetNode) -> bool:
        """Whether the operation's selection is within the limits (its cost then in `cost`)."""
        try:
            self.cost = self.selection(root, selection_set)
        except _Exceeded:
            return False
        # Introspection was charged as it was counted; the rest is checked here.
        return self.cost <= self.limit

    def selection(
        self,
        parent: GraphQLNamedType | None,
        selection_set: SelectionSetNode | None,
        visiting: frozenset[str] = frozenset(),
    ) -> int:
        """The cost of one instance of `parent` answering `selection_set`. Each field counted
        is also charged to the total at once (times `scale`, see `field`), so a bomb stops early."""
        if selection_set is None:
            return 0
        cost = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                cost += self.field(parent, node, visiting)
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition
                inner = self.schema.get_type(condition.name.value) if condition else parent
                cost += self.selection(inner, node.selection_set, visiting)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in visiting:
                    continue
                inner = self.schema.get_type(fragment.type_condition.name.value)
                cost += self.selection(inner, fragment.selection_set, visiting | {name})
        return cost

    def field(self, parent: GraphQLNamedType | None, node: FieldNode, visiting: frozenset[str]) -> int:
        name = node.name.value
        if name in INTROSPECTION_ROOTS:
            return self.introspection(node)
        if name == "__typename":
            return 1
        fields = getattr(parent, "fields", None)
        definition = fields.get(name) if fields is not None else None
        if definition is None:  # unknown: graphql-core reports it
            return 1
        named = get_named_type(definition.type)
        inner = self.selection(named, node.selection_set, visiting) if is_composite_type(named) else 0
        bound = self.list_bounds.get((getattr(parent, "name", ""), name))
        return 1 + inner * (1 if bound is None else self.first(node, bound))

    def first(self, node: FieldNode, bound: int) -> int:
        """The page a client asked for; its maximum when absent, null or out of range."""
        argument = next((a for a in node.arguments or () if a.name.value == "first"), None)
        value: Any = None
        if argument is not None:
            if isinstance(argument.value, IntValueNode):
                value = int(argument.value.value)
            elif isinstance(argument.value, VariableNode):
                value = self.variables.get(argument.value.name.value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= bound:
            return bound
        return value

    def introspection(self, node: FieldNode) -> int:
        """`__schema` or `__type`, counted one per value of its answer, as it would resolve."""
        root = self.schema.query_type
        if root is None:
            return 1
        definition = SchemaMetaFieldDef if node.name.value == "__schema" else TypeMetaFieldDef
        return self.resolved(root, definition, None, node)

    def resolved(self, parent: GraphQLNamedType, definition: GraphQLField, source: Any, node: FieldNode) -> int:
        """The values of one introspection field of `source` (charged to the total as counted)."""
        self.add(1)
        resolve = definition.resolve
        if resolve is None:
            return 1
        try:
            value = resolve(source, _Info(self.schema, parent), **self.arguments(definition, node))
        except Exception:  # arguments that do not coerce: validation or execution reports them
            return 1
        if value is None or node.selection_set is None:
            return 1
        items: Iterable[Any] = value if _is_list(definition.type) else (value,)
        named = get_named_type(definition.type)
        cost = 1
        for item in items:
            cost += self.introspected(named, item, node.selection_set, frozenset())
        return cost

    def arguments(self, definition: GraphQLField, node: FieldNode) -> dict[str, Any]:
        """The field's arguments as its resolver takes them (defaults filled in)."""
        if not definition.args:
            return {}
        given = {argument.name.value: argument.value for argument in node.arguments or ()}
        values: dict[str, Any] = {}
        for name, argument in definition.args.items():
            if name in given:
                value = value_from_ast(given[name], argument.type, self.variables)
                if value is Undefined:
                    raise ValueError(name)  # does not coerce: validation or execution says so
                values[name] = value
            elif argument.default_value is not Undefined:
                values[name] = argument.default_value
        return values

    def introspected(
        self, parent: GraphQLNamedType, source: Any, selection_set: SelectionSetNode, visiting: frozenset[str]
    ) -> int:
        if not isinstance(parent, GraphQLObjectType):  # introspection's types are all object types
            return 0
        cost = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                name = node.name.value
                definition = parent.fields.get(name)
                if definition is None:  # __typename, or unknown (reported by graphql-core)
                    self.add(1)
                    cost += 1
                else:
                    cost += self.resolved(parent, definition, source, node)
            elif isinstance(node, InlineFragmentNode):
                cost += self.introspected(parent, source, node.selection_set, visiting)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                fragment = self.fragments.get(name)
                if fragment is not None and name not in visiting:
                    cost += self.introspected(parent, source, fragment.selection_set, visiting | {name})
        return cost


def _is_list(type_: GraphQLType) -> bool:
    return isinstance(get_nullable_type(type_), GraphQLList)  # type: ignore[call-overload]


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: dict[str, Any],
    limit: int,
    introspection_limit: int | None = None,
    *,
    list_bounds: ListBounds,
) -> int | None:
    """The operation's cost, or None when it passes `limit`, or its introspection passes
    `introspection_limit` (counting stops there)."""
    bound = limit if introspection_limit is None else introspection_limit
    counter = _Cost(schema, _fragments(document), variables, limit, bound, list_bounds)
    root = schema.get_root_type(operation.operation)
    return counter.cost if counter.within(root, operation.selection_set) else None


def cost_rule(
    maximum_cost: int,
    maximum_subscription_cost: int | None = None,
    maximum_introspection_cost: int | None = None,
    *,
    list_bounds: ListBounds,
) -> VariableRule:
    """The cost rule for some variables: `first: $n` makes the cost depend on them. A
    subscription's limit is `maximum_subscription_cost` (its selection runs once per event); the
    values introspection answers with, `maximum_introspection_cost` (counted exactly, each one
    resolved to count it: the data limit is looser, as it counts absent `first`s at their maximum)."""
    subscription_limit = maximum_cost if maximum_subscription_cost is None else maximum_subscription_cost
    introspection_limit = maximum_cost if maximum_introspection_cost is None else maximum_introspection_cost

    def for_variables(variables: dict[str, Any]) -> type[ValidationRule]:
        class CostRule(ValidationRule):
            def enter_document(self, node: DocumentNode, *_args: Any) -> None:
                schema = self.context.schema
                for definition in node.definitions:
                    if not isinstance(definition, OperationDefinitionNode):
                        continue
                    subscription = definition.operation == OperationType.SUBSCRIPTION
                    limit = subscription_limit if subscription else maximum_cost
                    counter = _Cost(schema, _fragments(node), variables, limit, introspection_limit, list_bounds)
                    if counter.within(schema.get_root_type(definition.operation), definition.selection_set):
                        continue
                    if counter.introspected_values > counter.introspection_limit:
                        message = (
                            f"The query's introspection exceeds the maximum cost of {counter.introspection_limit}."
                        )
                    else:
                        kind = "subscription" if subscription else "query"
                        message = f"The {kind} exceeds the maximum cost of {limit}."
                    self.report_error(GraphQLError(message, extensions={"code": TOO_COMPLEX}))

        return CostRule

    return VariableRule(for_variables, COST_ARGUMENTS)
