"""What telemetry's hooks cost one call, off (no SDK: the `None` check and the integers) and on
(a real MeterProvider with an in-memory reader), in this process. Prints figures, asserts
nothing.

    python -m bench.telemetry_hooks
"""

from __future__ import annotations

import time
import timeit

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from telemetry import record, traces


def per_call_ns(call: object, number: int) -> float:
    return timeit.timeit(call, number=number) / number * 1e9  # type: ignore[arg-type]


def main() -> None:
    started = record.clock()
    off = 1_000_000
    print(f"empty call: {per_call_ns(lambda: None, off):.0f} ns (included in each figure below)")
    print("telemetry off:")
    print(f"  record.delivered   {per_call_ns(lambda: record.delivered('messageCreated', 10, 1, 1.0), off):8.0f} ns")
    request = per_call_ns(lambda: record.http_request("POST", "/graphql", 200, started), off)
    print(f"  record.http_request{request:8.0f} ns")
    print(f"  record.pool_waited {per_call_ns(lambda: record.pool_waited('postgres', started), off):8.0f} ns")
    print(f"  traces.publishing  {per_call_ns(lambda: traces.publishing().__enter__(), off):8.0f} ns")
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    record.histograms = record.Histograms(provider.get_meter("bench"))
    on = 200_000
    try:
        print("telemetry on (histograms recorded):")
        delivered = per_call_ns(lambda: record.delivered("messageCreated", 10, 1, time.time()), on)
        print(f"  record.delivered   {delivered:8.0f} ns")
        request = per_call_ns(lambda: record.http_request("POST", "/graphql", 200, started), on)
        print(f"  record.http_request{request:8.0f} ns")
    finally:
        record.histograms = None
        provider.shutdown()


if __name__ == "__main__":
    main()
