"""Process-wide settings that are not objects: what reaches the logs, the password hashing pool,
and the garbage collector once start-up has built what lives as long as the process."""

from __future__ import annotations

import gc

from core import logs
from core.settings import Settings
from identity import auth

# Python's defaults are (700, 10, 10): a full collection every ~70,000 allocations. These make it
# every ~1,000,000; young garbage stays bounded (`make soak`: flat after warm-up).
GC_THRESHOLDS = (10_000, 10, 10)


def configure(settings: Settings) -> None:
    """When the app is created (before the server logs anything, before anything is hashed)."""
    logs.configure(settings.log_level, settings.log_format)
    auth.configure_hashing(settings.password_hash_threads, settings.password_hash_queue)


def settle_heap() -> None:
    """What start-up built lives as long as the process: the collector need not scan it again.
    And it runs less often: each collection pauses every live delivery (a full one took tens of
    milliseconds); what it finds is the rare cycle, most garbage goes by reference counting. See
    the README's figures."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
