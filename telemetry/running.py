"""The OpenTelemetry SDK in one worker: built when the app's lifespan starts, shut down when it
ends, and only when an OTLP endpoint is configured.

Built after gunicorn forked the worker (the lifespan runs there), never at import nor in the
arbiter: the SDK's export threads do not survive a fork. Configured by the standard OTEL_*
variables only: which signals export is decided here from them (as the settings read them);
the exporters, the reader's interval (OTEL_METRIC_EXPORT_INTERVAL), the batch processor and
the sampler (OTEL_TRACES_SAMPLER, _ARG) read the rest of them as the SDK documents.

The resource says which worker of which dyno speaks: `service.instance.id` is the dyno (DYNO)
and the worker's slot (the lowest free one, assigned by gunicorn before fork:
serving/gunicorn.conf.py), so a recycled worker continues its slot's series instead of starting
new ones, and two workers never share a cumulative stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import unquote

from opentelemetry.metrics import CallbackOptions, Observation

from core.settings import Settings
from telemetry import record, traces

logger = logging.getLogger("chat.telemetry")

SERVICE_NAME = "chat"
# How often the event loop's lag is sampled.
LAG_INTERVAL_SECONDS = 1.0
# Histogram buckets in seconds: from a fast request to a slow consumer's delivery.
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
EVENTS_BUCKETS = (0, 1, 5, 10, 50, 100, 500, 1000, 5000)


def exports(otel: dict[str, str], signal: str) -> bool:
    """Whether `signal` ("METRICS", "TRACES") is exported: an endpoint is set for it and neither
    OTEL_SDK_DISABLED nor OTEL_<signal>_EXPORTER=none turns it off."""
    if otel.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if otel.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        otel.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or otel.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip()
    )


def resource_attributes(settings: Settings) -> dict[str, str]:
    """service.name, .instance.id and .version, over OTEL_RESOURCE_ATTRIBUTES."""
    otel = dict(settings.otel)
    attributes: dict[str, str] = {}
    for pair in otel.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    attributes["service.name"] = otel.get("OTEL_SERVICE_NAME", "").strip() or attributes.get(
        "service.name", SERVICE_NAME
    )
    attributes["service.instance.id"] = f"{settings.dyno}.{settings.worker_slot}"
    if settings.release_version:
        attributes["service.version"] = settings.release_version
    return attributes


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[None]:
    """The SDK exporting for as long as the block runs (nothing at all without an endpoint)."""
    otel = dict(settings.otel)
    metrics, spans = exports(otel, "METRICS"), exports(otel, "TRACES")
    if not metrics and not spans:
        yield
        return
    from opentelemetry.sdk.resources import Resource

    resource = Resource(resource_attributes(settings))
    meter_provider = _meter_provider(resource) if metrics else None
    tracer_provider = _tracer_provider(resource) if spans else None
    lag: asyncio.Task[None] | None = None
    if meter_provider is not None:
        meter = meter_provider.get_meter("chat")
        _observe(meter)
        _observe_webhooks(meter)
        record.histograms = record.Histograms(meter)
        lag = asyncio.create_task(_watch_lag(), name="event loop lag")
    if tracer_provider is not None:
        traces.tracer = tracer_provider.get_tracer("chat")
    try:
        yield
    finally:
        record.histograms = None
        traces.tracer = None
        if lag is not None:
            lag.cancel()
            with suppress(asyncio.CancelledError):
                await lag
        # Flushing blocks on the network: in a thread, so the loop finishes its other closes.
        for provider in (meter_provider, tracer_provider):
            if provider is not None:
                await asyncio.to_thread(_shut_down, provider)


def _shut_down(provider: Any) -> None:
    try:
        provider.shutdown()
    except Exception:
        logger.exception("Shutting telemetry down failed")


def _meter_provider(resource: Any) -> Any:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import Histogram, MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    views = [
        View(
            instrument_type=Histogram,
            instrument_unit="s",
            aggregation=ExplicitBucketHistogramAggregation(SECONDS_BUCKETS),
        ),
        View(
            instrument_type=Histogram,
            instrument_unit="{event}",
            aggregation=ExplicitBucketHistogramAggregation(EVENTS_BUCKETS),
        ),
    ]
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    return MeterProvider(metric_readers=[reader], resource=resource, views=views, shutdown_on_exit=False)


def _tracer_provider(resource: Any) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _observe(meter: Any) -> None:
    """The observable instruments, reading telemetry.record's integers at export time."""
    counts = record.counts

    def by(name: str, values: dict[Any, int]) -> Iterable[Observation]:
        return [Observation(value, {name: key}) for key, value in list(values.items())]

    meter.create_observable_up_down_counter(
        "chat.realtime.connection.active",
        [lambda _o: by("chat.transport", counts.connections)],
        unit="{connection}",
        description="Open WebSockets, SSE and multipart streams.",
    )

    def subscriptions(_options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(value, {"graphql.subscription.field": field, "chat.transport": transport})
            for (field, transport), value in list(counts.subscriptions.items())
        ]

    meter.create_observable_up_down_counter(
        "graphql.server.subscription.active", [subscriptions], unit="{subscription}", description="Live subscriptions."
    )
    meter.create_observable_counter(
        "chat.fanout.deliveries",
        [lambda _o: by("graphql.subscription.field", counts.deliveries)],
        unit="{delivery}",
        description="Results handed to subscribers.",
    )
    meter.create_observable_counter(
        "chat.fanout.executions",
        [lambda _o: by("graphql.subscription.field", counts.executions)],
        unit="{execution}",
        description="Executions of a group's selection for an event.",
    )
    meter.create_observable_counter(
        "chat.realtime.slow_consumer.closes",
        [lambda _o: by("chat.transport", counts.slow_consumer_closes)],
        unit="{connection}",
        description="Connections closed because their client read too slowly.",
    )

    def errors(_options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(
                value, {"graphql.error.code": code, "graphql.operation.type": kind, "chat.transport": transport}
            )
            for (code, kind, transport), value in list(counts.errors.items())
        ]

    meter.create_observable_counter(
        "chat.graphql.errors", [errors], unit="{error}", description="GraphQL errors by code."
    )
    meter.create_observable_counter(
        "chat.ratelimit.refusals",
        [lambda _o: by("chat.ratelimit.rule", counts.refusals)],
        unit="{request}",
        description="Hits refused by a rate limit.",
    )
    meter.create_observable_counter(
        "chat.redis.pubsub.reconnects",
        [lambda _o: [Observation(counts.pubsub_reconnects)]],
        unit="{reconnect}",
        description="Times the Redis pub/sub connection came back.",
    )

    def pools(_options: CallbackOptions) -> Iterable[Observation]:
        observed = []
        for pool, states in list(record.pools.items()):
            try:
                by_state = states()
            except Exception:  # a pool closing while exporting: nothing to say this time
                continue
            for state, value in by_state.items():
                observed.append(
                    Observation(value, {"db.client.connection.pool.name": pool, "db.client.connection.state": state})
                )
        return observed

    meter.create_observable_up_down_counter(
        "db.client.connection.count", [pools], unit="{connection}", description="Pool connections by state."
    )
    meter.create_observable_counter(
        "db.client.connection.timeouts",
        [lambda _o: by("db.client.connection.pool.name", counts.pool_timeouts)],
        unit="{timeout}",
        description="Waits for a pool's connection that timed out.",
    )


def _observe_webhooks(meter: Any) -> None:
    """Attempts by outcome, and the backlog as the delivering process last read it (one read per
    export: the backlog's callback asks for it, the age's uses the same read)."""
    counts = record.counts
    meter.create_observable_counter(
        "chat.webhook.deliveries",
        [
            lambda _o: [
                Observation(value, {"chat.webhook.endpoint": endpoint, "chat.webhook.outcome": outcome})
                for (endpoint, outcome), value in list(counts.webhook_deliveries.items())
            ]
        ],
        unit="{attempt}",
        description="Attempts to deliver a webhook event, by outcome.",
    )
    read: list[record.WebhookBacklog] = []

    def backlog(_options: CallbackOptions) -> Iterable[Observation]:
        reader = record.webhook_backlog
        read[:] = reader() if reader is not None else []
        return [Observation(b.events, {"chat.webhook.endpoint": b.endpoint}) for b in read]

    def age(_options: CallbackOptions) -> Iterable[Observation]:
        now = time.time()
        return [
            Observation(
                max(0.0, now - b.oldest_at) if b.oldest_at is not None else 0.0, {"chat.webhook.endpoint": b.endpoint}
            )
            for b in read
        ]

    meter.create_observable_gauge(
        "chat.webhook.backlog",
        [backlog],
        unit="{event}",
        description="Webhook events not yet delivered, across rooms (the same figure from every delivering process).",
    )
    meter.create_observable_gauge(
        "chat.webhook.backlog.age",
        [age],
        unit="s",
        description="Since the oldest undelivered webhook event's commit (0 with none).",
    )


async def _watch_lag() -> None:
    """How late a timer fires: what every callback on this worker's loop waits on top of its work."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(LAG_INTERVAL_SECONDS)
        record.event_loop_lag(max(0.0, time.perf_counter() - started - LAG_INTERVAL_SECONDS))
