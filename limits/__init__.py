"""Cheap refusals for hostile input: body size, query shape and cost, request rates."""
