"""Database access: the connection, the tables, migrations and plain async functions."""
