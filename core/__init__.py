"""The process's plumbing, below everything else: settings, errors, outages, logs, Redis clients
and the broadcast that carries every topic. Imports nothing of the product."""
