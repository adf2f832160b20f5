"""Parse and validate each distinct query text once: graphql-core's validation costs more than
executing a small query. Documents are cached by their text, and so are validation's verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import orjson
from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, GraphQLSyntaxError, parse, validate

CACHE_SIZE = 1024


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
    the rule that also reads the variables (the cost of `first: $n`) once per text and variables;
    the rule itself is built only then."""

    def __init__(
        self,
        schema: GraphQLSchema,
        rules: Sequence[type[ASTValidationRule]],
        variable_rule: Callable[[dict[str, Any]], type[ASTValidationRule]] | None = None,
    ) -> None:
        self._schema = schema
        self._rules = tuple(rules)
        self._variable_rule = variable_rule
        self._by_text: dict[str, tuple[GraphQLError, ...]] = {}
        self._by_variables: dict[tuple[str, bytes], tuple[GraphQLError, ...]] = {}

    def errors(self, text: str, document: DocumentNode, variables: dict[str, Any] | None) -> tuple[GraphQLError, ...]:
        errors = self._by_text.get(text)
        if errors is None:
            errors = _remember(self._by_text, text, tuple(validate(self._schema, document, self._rules)))
        if errors or self._variable_rule is None:
            return errors
        key = (text, orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS))
        errors = self._by_variables.get(key)
        if errors is None:
            rule = self._variable_rule(variables or {})
            errors = _remember(self._by_variables, key, tuple(validate(self._schema, document, [rule])))
        return errors


def _remember(
    cache: dict[Any, tuple[GraphQLError, ...]], key: Any, errors: tuple[GraphQLError, ...]
) -> tuple[GraphQLError, ...]:
    if len(cache) >= CACHE_SIZE:
        cache.clear()
    cache[key] = errors
    return errors
