"""The producer's client of ``loop gateway``: create, read and cancel tasks over REST.

::

    from loops.client import GatewayClient

    with GatewayClient("http://127.0.0.1:7070", token=token) as client:
        task = client.create_task({"prompt": "Fix the flaky test"})

One concept per module: ``gateway`` (:class:`GatewayClient`, the REST calls and their
errors) and ``transports`` (how the bytes travel: kept-alive sockets, or httpx for
``https://`` and proxies).
"""

from __future__ import annotations

from loops.client.gateway import GatewayClient

__all__ = ["GatewayClient"]
