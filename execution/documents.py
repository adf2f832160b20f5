"""Parse and validate each distinct query text once: graphql-core's validation costs more than
executing a small query. Documents are cached by their text, and so are validation's verdicts
(the verdict of a rule that reads variables, by the text and the variables it reads).

Every cache is bounded in bytes, not entries, and keeps only texts of at most `CACHEABLE_BYTES`:
a parsed document takes 50 to 100 times its text in memory (measured: 4 KB of `__typename`s is
a 234 KB tree), and a cached verdict's errors point into it. Longer texts (Operations refuses
texts over MAX_QUERY_BYTES before they get here) are parsed and validated on every request, as
their senders are few: the web client's longest document is under 1 KB.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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

# Texts longer than this are never cached; each cache holds at most CACHE_BYTES of texts (so
# at most about 100 times that of parsed documents).
CACHEABLE_BYTES = 4096
CACHE_BYTES = 256 * 1024
K = TypeVar("K")
T = TypeVar("T")


def text_bytes(text: str) -> int:
    """The UTF-8 length of `text`, without encoding it when it is ASCII (the usual case)."""
    return len(text) if text.isascii() else len(text.encode())


class BytesLRU(Generic[K, T]):
    """The most recently used entries whose weights (their bytes, as the caller counts them)
    add up to at most `max_bytes`; an entry heavier than `max_entry_bytes` is not kept."""

    def __init__(self, max_bytes: int, max_entry_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes if max_entry_bytes is None else min(max_entry_bytes, max_bytes)
        self.bytes = 0
        self._entries: OrderedDict[K, tuple[T, int]] = OrderedDict()

    def get(self, key: K) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: K, value: T, weight: int) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        if weight > self.max_entry_bytes:
            return
        self._entries[key] = (value, weight)
        self.bytes += weight
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def pop_oldest(self) -> None:
        if self._entries:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


@dataclass(frozen=True)
class VariableRule:
    """A validation rule built for a request's variables, and the arguments through which it
    reads them (a query's cost reads `first: $n`): its verdict holds for every request with the
    same text whose variables in those arguments have the same values."""

    build: Callable[[dict[str, Any]], type[ASTValidationRule]]
    arguments: frozenset[str]


_parsed: BytesLRU[str, DocumentNode | GraphQLError] = BytesLRU(CACHE_BYTES, CACHEABLE_BYTES)


def _parse(text: str) -> DocumentNode | GraphQLError:
    """The document or its syntax error, from the cache when the text is short enough to keep."""
    found = _parsed.get(text)
    if found is not None:
        return found
    try:
        found = parse(text)
    except GraphQLError as error:
        found = error.with_traceback(None)  # the cache must not keep the first request's frames
    _parsed.put(text, found, text_bytes(text))
    return found


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
        self._by_text: BytesLRU[str, tuple[tuple[GraphQLError, ...], tuple[str, ...]]] = BytesLRU(
            CACHE_BYTES, CACHEABLE_BYTES
        )
        self._by_variables: BytesLRU[tuple[str, bytes], tuple[GraphQLError, ...]] = BytesLRU(
            CACHE_BYTES, CACHEABLE_BYTES
        )

    def errors(self, text: str, document: DocumentNode, variables: dict[str, Any] | None) -> tuple[GraphQLError, ...]:
        rule = self._variable_rule
        size = text_bytes(text)
        verdict = self._by_text.get(text)
        if verdict is None:
            found = tuple(validate(self._schema, document, self._rules))
            read = _variables_in(document, rule.arguments) if rule is not None and not found else ()
            verdict = (found, read)
            self._by_text.put(text, verdict, size)
        errors, read = verdict
        if errors or rule is None:
            return errors
        variables = variables or {}
        key = (text, orjson.dumps([variables.get(name) for name in read]))
        kept = self._by_variables.get(key)
        if kept is None:
            kept = tuple(validate(self._schema, document, [rule.build(variables)]))
            self._by_variables.put(key, kept, size + len(key[1]))
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
