"""Every place the code relies on a library beyond its public API, in one list.

Each reach names the library and the version it was written against (pinned in
requirements.txt), where it is, what it relies on, what it buys, and the test in
tests/test_library_reaches.py that fails loudly when the library changes under it. A reach
that buys speed or memory stays only while it moves a README figure by more than 5% against
the public API (`make bench-reaches`, bench/reaches.py, measures both in one run); one that
buys behaviour the README promises has no public way to keep that promise. The README's table
"Where the code reaches into a library's internals" shows this list with its figures, and
tests/test_library_reaches.py checks that the two agree.

A reaching module takes its `WRITTEN_AGAINST` from here (`written_against`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reach:
    library: str  # the distribution's name, as importlib.metadata knows it
    version: str
    where: str  # module: symbols
    relies_on: str
    buys: str
    guard: str  # a test function in tests/test_library_reaches.py


REACHES: tuple[Reach, ...] = (
    Reach(
        "uvicorn",
        "0.54.0",
        "serving/uvicorn_protocols.py: DrainingHttpProtocol, DrainingServer, take_backlog",
        "HttpToolsProtocol's cycle, pipeline and flow control; Server.shutdown's order",
        "a stopping or recycling worker answers every request it was sent, kept-alive connections "
        "and listen backlog included, and ends SSE and multipart streams (tests/test_recycling.py, "
        "tests/test_graceful_shutdown.py); no public setting drains",
        "test_streamed_chunks_go_straight_to_the_transport_and_a_draining_worker_ends_streams",
    ),
    Reach(
        "uvicorn",
        "0.54.0",
        "serving/uvicorn_protocols.py: DrainingHttpProtocol.response_complete (NOT_COUNTED)",
        "HttpToolsProtocol.on_response_complete counts towards MAX_REQUESTS",
        "health checks and refusals do not recycle workers (tests/test_recycling.py); uvicorn counts every response",
        "test_a_response_marked_not_counted_does_not_count_towards_max_requests",
    ),
    Reach(
        "uvicorn",
        "0.54.0",
        "serving/uvicorn_protocols.py: DrainingHttpProtocol.connection_made, on_headers_complete (Pipeline, LeanEvent)",
        "HttpToolsProtocol's pipeline deque, FlowControl._is_writable_event, the cycle's message_event",
        "memory per idle SSE or multipart subscriber",
        "test_streamed_chunks_go_straight_to_the_transport_and_a_draining_worker_ends_streams",
    ),
    Reach(
        "uvicorn",
        "0.54.0",
        "serving/uvicorn_protocols.py: LeanWebSocketProtocol (ReceiveQueue, LeanEvent, PingWheel)",
        "WebSocketsSansIOProtocol's request, response, queue, writable event and keepalive handles",
        "memory per idle subscribed WebSocket",
        "test_the_lean_websocket_protocol_keeps_little_and_writes_whole_frames",
    ),
    Reach(
        "uvicorn",
        "0.54.0",
        "serving/uvicorn_protocols.py: LeanWebSocketProtocol.write, frame_writer",
        "WebSocketsSansIOProtocol's transport, closing state and flow control behind `send`",
        "server CPU per delivery (WebSocket)",
        "test_the_lean_websocket_protocol_keeps_little_and_writes_whole_frames",
    ),
    Reach(
        "uvicorn",
        "0.54.0",
        "serving/uvicorn_protocols.py: ChunkWriter, chunk_writer",
        "RequestResponseCycle's transport, chunked encoding and flow control behind `send`",
        "server CPU per delivery (SSE, multipart)",
        "test_streamed_chunks_go_straight_to_the_transport_and_a_draining_worker_ends_streams",
    ),
    Reach(
        "uvicorn",
        "0.54.0",
        "core/logs.py: StripQueryString",
        "uvicorn.access's record args: (client, method, path with query, http version, status)",
        "no token in a GET's query string reaches the logs; uvicorn has no setting for it",
        "test_the_access_line_s_arguments_are_what_the_log_filter_strips",
    ),
    Reach(
        "uvicorn-worker",
        "0.4.0",
        "serving/worker.py: ChatWorker._serve",
        "UvicornWorker._serve's steps (config.app, sigquit handler, serve, boot error)",
        "the draining server in gunicorn's worker; the worker takes no server class",
        "test_the_worker_serves_as_uvicorn_worker_does_with_the_draining_server",
    ),
    Reach(
        "databases",
        "0.9.0",
        "db/pool.py: BoundedWaitConnection.acquire, BoundedWaitBackend, OutageAwareTransaction",
        "PostgresBackend's pool and PostgresConnection's connection; PostgresTransaction's methods",
        "a request beyond the pool waits DATABASE_ACQUIRE_TIMEOUT, then SERVICE_UNAVAILABLE, and an "
        "outage is SERVICE_UNAVAILABLE everywhere (tests/test_connection_budget.py, "
        "tests/test_database_outage.py); `databases` waits forever and raises asyncpg's errors",
        "test_the_pool_s_wait_is_bounded_and_a_read_takes_no_per_task_connection",
    ),
    Reach(
        "databases",
        "0.9.0",
        "db/pool.py: BoundedWaitConnection._compiled_with_maps, _static, fetch_all",
        "PostgresConnection._compile's output and create_column_maps; SQLAlchemy's compiled "
        "_result_columns, _bind_processors, construct_expanded_state",
        "worker CPU per unread request",
        "test_the_pool_compiles_statements_as_databases_does",
    ),
    Reach(
        "SQLAlchemy",
        "2.1.9",
        "db/pool.py: BoundedWaitConnection._compiled_with_maps, _static",
        "compiled statements' _result_columns, _bind_processors, construct_expanded_state",
        "worker CPU per unread request",
        "test_a_kept_statement_takes_lists_of_any_length",
    ),
    Reach(
        "databases",
        "0.9.0",
        "db/pool.py: fetch_rows, fetch_views (_fetched_rows)",
        "Database._backend, _global_connection, _connection_map; Connection._connection, _query_lock",
        "worker CPU per unread request",
        "test_rows_are_read_on_the_connection_databases_would_use",
    ),
    Reach(
        "asyncpg",
        "0.32.0",
        "db/records.py: ReadOnlyRow (Mapping.register)",
        "Record subclasses as record_class, with keys(), get() and [key]; iterating a Record "
        "yields its values, not its keys, so only what reads it by key may take it as a Mapping",
        "worker CPU per unread request",
        "test_a_read_only_row_reads_as_a_mapping_by_key_only",
    ),
    Reach(
        "asyncpg",
        "0.32.0",
        "core/outages.py: is_database_unavailable, QuietPoolRetries",
        "InterfaceError's texts for a closed connection and a broken protocol state; the "
        "'asyncpg.pool' logger's reconnect records",
        "an outage is SERVICE_UNAVAILABLE, not an internal error, and logs one line per try "
        "(tests/test_database_outage.py); asyncpg has no type for these failures",
        "test_asyncpg_s_messages_for_a_closed_connection_are_what_outages_recognise",
    ),
    Reach(
        "graphql-core",
        "3.3.2",
        "execution/lean_executor.py: LeanExecutor.complete_iterable_value, _complete_flat, patched",
        "Executor.complete_iterable_value's signature, GraphQLResolveInfo's fields, "
        "collect_subfields and get_argument_values",
        "worker CPU per unread request",
        "test_flat_lists_take_the_short_path_and_answer_as_graphql_core_does",
    ),
    Reach(
        "graphql-core",
        "3.3.2",
        "execution/lean_executor.py: LeanExecutor.build_per_event_executor",
        "Executor._relevant_sub_fields and _stream_usages, shared by per-event copies",
        "memory of an executor kept for a long-lived subscription (make bench: executor_memory)",
        "test_an_executor_copied_per_event_does_not_grow_with_events",
    ),
    Reach(
        "graphql-core",
        "3.3.2",
        "live/source.py: LiveSource.__aiter__; transports/operations.py: create_source_event_stream",
        "create_source_event_stream hands back the source resolver's async iterable untouched",
        "the live engine: one execution per selection and event, the same bytes to every "
        "subscriber (every live figure); graphql-core's public path executes per subscriber",
        "test_graphql_core_hands_a_source_back_untouched",
    ),
    Reach(
        "graphql-core",
        "3.3.2",
        "core/errors.py: code_for_request_error",
        "the texts of graphql-core's syntax and variable errors ('Syntax Error', 'Variable ', 'runtime value')",
        "coded errors (GRAPHQL_PARSE_FAILED, BAD_USER_INPUT) for clients; graphql-core gives "
        "request errors no code (tests/test_api_errors.py)",
        "test_graphql_core_s_request_errors_read_as_the_codes_we_give",
    ),
)

# Reaches taken out, and why (`make bench-reaches` measures each against what replaced it).
REMOVED: tuple[tuple[str, str], ...] = (
    (
        "broadcaster 0.3.1: core/broadcast.py put its queues in Broadcast's subscriber table",
        "broadcaster's public Broadcast costs about 1 µs more per event: 0.01% of an event's fan-out",
    ),
    (
        "asyncpg 0.32.0: db/asyncpg_pool.py gave a connection back in the querying task",
        "about 5% of an unread request's CPU (4.1% to 7.3% over seven runs), within noise of the "
        "bar, and no gain in requests per second in-process",
    ),
)


def written_against(library: str) -> str:
    """The version every reach into `library` was written against."""
    versions = {reach.version for reach in REACHES if reach.library == library}
    if len(versions) != 1:
        raise LookupError(f"{library}: {sorted(versions) or 'no reach'}")
    return versions.pop()
