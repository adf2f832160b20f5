"""Real processes for the tests: a fresh Postgres database, a gunicorn server, a GraphQL client."""
