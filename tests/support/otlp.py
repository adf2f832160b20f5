"""A real OTLP/HTTP receiver on loopback: the SDK's exporter posts protobuf to it, it decodes
each request with opentelemetry-proto (gzip included) and keeps it, raw bytes too."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.raw: list[bytes] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.traces: list[ExportTraceServiceRequest] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # Keeps connections alive, as a collector does: the exporter reuses its connection
            # instead of connecting for every export (what HTTP/1.0 would make it pay).
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                with receiver.lock:
                    receiver.raw.append(body)
                    if self.path == "/v1/metrics":
                        receiver.metrics.append(ExportMetricsServiceRequest.FromString(body))
                    elif self.path == "/v1/traces":
                        receiver.traces.append(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def latest(self) -> dict[tuple[str, str, tuple[tuple[str, Any], ...]], Any]:
        """(instance id, metric name, attributes) -> its latest data point, over all exports."""
        points: dict[tuple[str, str, tuple[tuple[str, Any], ...]], Any] = {}
        with self.lock:
            requests = list(self.metrics)
        for request in requests:
            for resource_metrics in request.resource_metrics:
                instance = _attributes(resource_metrics.resource.attributes).get("service.instance.id", "")
                for scope in resource_metrics.scope_metrics:
                    for metric in scope.metrics:
                        kind = metric.WhichOneof("data")
                        for point in getattr(metric, kind).data_points:
                            key = (instance, metric.name, tuple(sorted(_attributes(point.attributes).items())))
                            earlier = points.get(key)
                            if earlier is None or point.time_unix_nano >= earlier.time_unix_nano:
                                points[key] = point
        return points

    def total(self, name: str, instance_prefix: str = "", **attributes: Any) -> float:
        """A sum's or gauge's latest value (a histogram's count), summed over workers (those whose
        service.instance.id starts with `instance_prefix`) and over the attribute sets that match
        `attributes`."""
        total = 0.0
        for (instance, metric, attrs), point in self.latest().items():
            if metric != name or not instance.startswith(instance_prefix):
                continue
            if any(dict(attrs).get(k) != v for k, v in attributes.items()):
                continue
            total += point.count if hasattr(point, "bucket_counts") else (point.as_int or point.as_double)
        return total

    def instances(self) -> set[str]:
        return {instance for instance, _, _ in self.latest()}

    def spans(self) -> Iterator[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) of every span received."""
        with self.lock:
            requests = list(self.traces)
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        yield resource, span


def _attributes(pairs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind) if kind else None
    return values


if __name__ == "__main__":
    # A receiver in a process of its own (bench.telemetry: decoding exports must not take the
    # load generator's time): prints its endpoint, then, once its stdin closes, how many metric
    # and trace exports it got.
    import sys

    with Receiver() as receiver:
        print(receiver.endpoint, flush=True)
        sys.stdin.read()
        print(len(receiver.metrics), len(receiver.traces), flush=True)
