"""The gateway: the queue served over HTTP (REST, server-sent events, metrics).

Import :func:`loops.gateway.app.create_app` to build the ASGI app, or run
``loop gateway``. Nothing here is imported by ``import loops``: FastAPI and uvicorn
load only when the gateway is used.
"""
