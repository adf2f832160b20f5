"""`python -m composition.webhooks`: a process that only delivers webhooks (a Procfile `worker:`
line), for a deployment that keeps them out of the web dynos (WEBHOOK_IN_WEB=0 there). It finds
its work as soon as it is committed by hearing the room events the web processes publish on
Redis (transports.webhooks.RoomEventsHeard rings its doorbell), and in any case by polling the
outbox every WEBHOOK_POLL_SECONDS, which finds whatever a missed wake-up did not; and the
connections of `recipients.offline` in Redis (without Redis it only polls, and sees nobody
connected: on the embedded default, let the web process deliver). SIGTERM stops it; its leases
are given back. With an OTLP endpoint it exports its metrics (telemetry.running) like a web
worker."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal

from composition import process
from core.cancelling import cancel_and_wait
from core.redis_clients import create_redis
from core.settings import Settings, load
from db.connection import open_database
from live.quota import LiveQuota
from resolvers.webhook_events import WebhookEvents
from telemetry.running import running
from transports.webhooks import Dispatcher, Doorbell, RoomEventsHeard

logger = logging.getLogger("chat.webhooks")
WORKER_POOL = 2
# Redis connections: the pattern subscription's own, and the quota's reads.
WORKER_REDIS = 3


async def run(settings: Settings, stopping: asyncio.Event) -> None:
    """Deliver until `stopping` is set."""
    redis = (
        create_redis(settings.redis_url, settings.redis_ssl_cert_reqs, WORKER_REDIS, settings.redis_acquire_timeout)
        if settings.redis_url
        else None
    )
    # Its own small pool: count WORKER_POOL connections in DATABASE_CONNECTION_RESERVE.
    db = open_database(dataclasses.replace(settings, db_pool_max=min(settings.db_pool_max, WORKER_POOL)))
    quota = LiveQuota(
        redis,
        settings.channel_prefix,
        max_subscriptions=settings.max_subscriptions_per_user,
        max_connections=settings.max_connections_per_user,
        lease_seconds=settings.live_lease_seconds,
    )
    await db.connect()
    try:
        doorbell = Doorbell()
        dispatcher = Dispatcher(db, settings, WebhookEvents(db, quota), doorbell)
        await dispatcher.start()
        hearing = (
            asyncio.create_task(RoomEventsHeard(redis, settings.channel_prefix, doorbell).run(), name="room events")
            if redis is not None
            else None
        )
        logger.info("Delivering webhooks to %d endpoint(s)", len(settings.webhook_urls))
        try:
            await stopping.wait()
        finally:
            if hearing is not None:
                await cancel_and_wait([hearing])
            await dispatcher.stop()
    finally:
        await db.disconnect()
        if redis is not None:
            await redis.aclose()


def main() -> None:
    settings = load()
    process.configure(settings)
    if not settings.webhook_urls:
        logger.warning("WEBHOOK_URL is not set: nothing to deliver")

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        async with running(settings):  # its webhook metrics, with an OTLP endpoint
            await run(settings, stopping)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
