"""How the process is served: gunicorn's config, the worker, uvicorn's protocols as we need them,
and what every request and response passes through at the edge (forwarded addresses, security
headers). Below everything but core: the transports write through its protocols."""
