"""The live engine and what it stands on: topics and bytes, never rooms, sockets or the
database. Resolvers import its public names from live.source alone (a `LiveSource`, an
`Audience`); the transports hand it sinks. The registry of feeds is live.engine; each kind of
topic has a feed of its own (live.logged, live.state, live.feed's plain one); live.messages
says what a topic's messages look like."""
