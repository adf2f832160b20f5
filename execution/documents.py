"""Parse and validate each distinct query text once: graphql-core's validation costs more than
executing a small query. Documents are cached by their text, and so are validation's verdicts
(the verdict of a rule that reads variables, by the text and the variables it reads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import orjson
from graphql import (
    ArgumentNode,
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    VariableNode,
    Visitor,
    parse,
    validate,
    visit,
)

CACHE_SIZE = 1024
T = TypeVar("T")


@dataclass(frozen=True)
class VariableRule:
    """A validation rule built for a request's variables, and the arguments through which it
    reads them (a query's cost reads `first: $n`): its verdict holds for every request with the
    same text whose variables in those arguments have the same values."""

    build: Callable[[dict[str, Any]], type[ASTValidationRule]]
    arguments: frozenset[str]


@lru_cache(maxsize=CACHE_SIZE)
def _parse(text: str) -> DocumentNode | GraphQLError:
    try:
        return parse(text)
    except GraphQLError as error:
        return error.with_traceback(None)  # the cache must not keep the first request's frames


def _fresh(error: GraphQLError) -> GraphQLError:
    """A new instance of the cached error: raising the cached one again would grow its
    traceback (and chain its context) with every request, keeping their frames alive."""
    if isinstance(error, GraphQLSyntaxError) and error.source is not None and error.positions:
        return GraphQLSyntaxError(error.source, next(iter(error.positions)), error.description)
    return GraphQLError(error.message, source=error.source, positions=error.positions, extensions=error.extensions)


def parse_document(text: str) -> DocumentNode:
    """Raises the syntax error for a malformed text, parsed once."""
    document = _parse(text)
    if isinstance(document, GraphQLError):
        raise _fresh(document)
    return document


class Validator:
    """Each distinct text validated once: the rules that read only the document once per text,
    the rule that also reads the variables (the cost of `first: $n`) once per text and values
    of the variables it reads; the rule itself is built only then. (Keyed by all the variables,
    every message posted, its body unlike any other, was validated again.)"""

    def __init__(
        self,
        schema: GraphQLSchema,
        rules: Sequence[type[ASTValidationRule]],
        variable_rule: VariableRule | None = None,
    ) -> None:
        self._schema = schema
        self._rules = tuple(rules)
        self._variable_rule = variable_rule
        # By text: the verdict of the rules that read only the document, and the variables the
        # variable rule reads (sorted), found with it.
        self._by_text: dict[str, tuple[tuple[GraphQLError, ...], tuple[str, ...]]] = {}
        self._by_variables: dict[tuple[str, bytes], tuple[GraphQLError, ...]] = {}

    def errors(self, text: str, document: DocumentNode, variables: dict[str, Any] | None) -> tuple[GraphQLError, ...]:
        rule = self._variable_rule
        verdict = self._by_text.get(text)
        if verdict is None:
            found = tuple(validate(self._schema, document, self._rules))
            read = _variables_in(document, rule.arguments) if rule is not None and not found else ()
            verdict = _remember(self._by_text, text, (found, read))
        errors, read = verdict
        if errors or rule is None:
            return errors
        variables = variables or {}
        key = (text, orjson.dumps([variables.get(name) for name in read]))
        kept = self._by_variables.get(key)
        if kept is None:
            kept = _remember(self._by_variables, key, tuple(validate(self._schema, document, [rule.build(variables)])))
        return kept


def _variables_in(document: DocumentNode, arguments: frozenset[str]) -> tuple[str, ...]:
    """The variables used anywhere in the values of arguments with these names, sorted."""
    found: set[str] = set()

    class Finder(Visitor):
        def enter_argument(self, node: ArgumentNode, *_: Any) -> None:
            if node.name.value in arguments:
                visit(node.value, Collector())

    class Collector(Visitor):
        def enter_variable(self, node: VariableNode, *_: Any) -> None:
            found.add(node.name.value)

    visit(document, Finder())
    return tuple(sorted(found))


def _remember(cache: dict[Any, T], key: Any, value: T) -> T:
    if len(cache) >= CACHE_SIZE:
        cache.clear()
    cache[key] = value
    return value
