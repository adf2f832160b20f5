"""The live engine and what it stands on: topics and bytes, never rooms, sockets or the
database. Resolvers hand it a `LiveSource` (live.source); the transports hand it sinks."""
