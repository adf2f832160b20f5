"""Executing GraphQL cheaply: cached documents and validation, and a fast JSON encoder."""
