"""What the service tells an operator: OpenTelemetry metrics and traces, pushed as OTLP over HTTP.

Two halves, so that the hot paths never wait on the SDK:
- `telemetry.record`: what the other layers call, one line per hook. Counts are plain integers
  (a dict increment), read by the SDK's observable instruments at export time; durations go to
  histograms only while the SDK runs (a module-level `None` check otherwise). Nothing here
  imports the SDK.
- `telemetry.running`: the SDK's providers, built in the worker when the app's lifespan starts
  (after gunicorn forked it), flushed and shut down when it ends, and only when an
  OTEL_EXPORTER_OTLP_*ENDPOINT is set; without one nothing is built and no thread runs.

Every attribute takes a closed set of values (a transport, a schema field, a rule, an error
code, a pool): never a room, user, token, channel, cursor, address or document.
"""
