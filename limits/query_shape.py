"""Validation rules that refuse a hostile document before any resolver runs.

Depth and size depend only on the document, so they can be cached with it; the cost rule
reads `first` from the variables and so runs again for each new value of those variables.
"""

from __future__ import annotations

from typing import Any

from ariadne.validation import cost_validator
from graphql import GraphQLError, ValidationRule
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

from execution.documents import VariableRule

INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})

COST_MAP: dict[str, dict[str, Any]] = {
    "Query": {
        "rooms": {"complexity": 10},
        "unreadCounts": {"complexity": 10},
        "room": {"complexity": 1},
        "me": {"complexity": 1},
    },
    "Room": {
        "members": {"complexity": 10},
        "messages": {"complexity": 1, "multipliers": ["first"]},
        "events": {"complexity": 1, "multipliers": ["first"]},
    },
    "MessageConnection": {"edges": {"complexity": 1}},
    "MessageEdge": {"node": {"complexity": 1}},
    "RoomEventConnection": {"edges": {"complexity": 1}},
    "RoomEventEdge": {"node": {"complexity": 1}},
    "Message": {"room": {"complexity": 1}, "sender": {"complexity": 1}},
}


def _expanded(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    depth: int,
    budget: list[int],
    visiting: frozenset[str] = frozenset(),
) -> tuple[int, int, int]:
    """(deepest field depth, fields, aliases) of a selection set whose fields sit at `depth`,
    fragments expanded. `budget` stops the walk early on documents built to explode through
    fragment reuse."""
    if selection_set is None or budget[0] <= 0:
        return 0, 0, 0
    deepest = fields = aliases = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            budget[0] -= 1
            if selection.name.value in INTROSPECTION_ROOTS:
                # Answered from the static schema (tools' standard query nests ~10 levels
                # and expands to hundreds of fields); the INTROSPECTION setting governs it.
                deepest, fields = max(deepest, depth), fields + 1
                continue
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
            fragments = {d.name.value: d for d in node.definitions if isinstance(d, FragmentDefinitionNode)}
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
            self.report_error(GraphQLError(message, extensions={"code": "QUERY_TOO_COMPLEX"}))

    return QueryShapeRule


# The arguments whose values multiply a field's cost: the only way the cost reads the variables.
MULTIPLIERS = frozenset(
    name for fields in COST_MAP.values() for cost in fields.values() for name in cost.get("multipliers", ())
)


def cost_rule(maximum_cost: int) -> VariableRule:
    """The cost rule for some variables: `first: $n` makes the cost depend on them."""

    def for_variables(variables: dict[str, Any]) -> type[ValidationRule]:
        return cost_validator(maximum_cost, default_cost=1, variables=variables, cost_map=COST_MAP)  # type: ignore[return-value]

    return VariableRule(for_variables, MULTIPLIERS)
