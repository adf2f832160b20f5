"""Parse and validate each distinct query text once.

Parsing and validating a small query costs graphql-core about 2 ms, most of a plain request.
Documents are cached by their text, and so are the results of the rules that depend only on
the document; rules marked `per_request` (the cost rule reads the variables) run every time.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache
from typing import Any

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


def per_request(rule: type[ASTValidationRule], cache_key: Any = None) -> type[ASTValidationRule]:
    """Mark a rule whose verdict depends on more than the document: on `cache_key` (hashable)
    when given, e.g. the variables it reads, or on everything when None."""
    rule.per_request = True  # type: ignore[attr-defined]
    rule.cache_key = cache_key  # type: ignore[attr-defined]
    return rule


_validated: dict[tuple[Any, ...], tuple[GraphQLError, ...]] = {}


def query_validator(
    schema: GraphQLSchema,
    document_ast: DocumentNode,
    rules: Collection[type[ASTValidationRule]] | None = None,
    max_errors: int | None = None,
    **_kwargs: Any,
) -> list[GraphQLError]:
    """Ariadne's `query_validator` hook, keyed by the document's source text (hashing a
    graphql-core document walks the whole tree)."""
    rules = tuple(rules or ())
    cached = tuple(rule for rule in rules if not getattr(rule, "per_request", False))
    fresh = [rule for rule in rules if getattr(rule, "per_request", False)]
    text = document_ast.loc.source.body if document_ast.loc else None
    errors = _run(schema, document_ast, text, cached, max_errors, ())
    if errors or not fresh:
        return list(errors)
    keys = tuple(getattr(rule, "cache_key", None) for rule in fresh)
    return list(_run(schema, document_ast, text if None not in keys else None, tuple(fresh), max_errors, keys))


def _run(
    schema: GraphQLSchema,
    document: DocumentNode,
    text: str | None,
    rules: tuple[type[ASTValidationRule], ...],
    max_errors: int | None,
    keys: tuple[Any, ...],
) -> tuple[GraphQLError, ...]:
    """Validate, remembering the verdict under the text (and the rules' own keys) when it has one."""
    key = (id(schema), text, keys or rules, max_errors)
    errors = _validated.get(key) if text is not None else None
    if errors is None:
        errors = tuple(validate(schema, document, rules=rules, max_errors=max_errors))
        if text is not None:
            if len(_validated) >= CACHE_SIZE:
                _validated.clear()
            _validated[key] = errors
    return errors
