"""Spans, while the SDK runs (telemetry.running sets `tracer`): short ones only, never a
connection's or a subscription's whole life, and never a document, variables, a message body
or a token on any of them."""

from __future__ import annotations

from typing import Any

tracer: Any = None
