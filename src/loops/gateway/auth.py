"""Who may talk to the gateway: loopback by default, a bearer token otherwise.

The gateway binds 127.0.0.1 unless told otherwise, and refuses to bind any other
address without ``QUEUE_API_TOKEN``. With a token set, every route but ``/healthz``
and the dashboard's page and static files requires ``Authorization: Bearer <token>``
(compared in constant time).
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.responses import Response
from starlette.types import Scope

from loops import errors
from loops.gateway.errors import error_response

#: routes answered without a token: liveness probes, and the dashboard's page (it holds
#: no data; it asks for the token and sends it with every request it makes)
OPEN_PATHS: frozenset[str] = frozenset({"/healthz", "/"})
#: path prefixes answered without a token: the dashboard's static files
OPEN_PREFIXES: tuple[str, ...] = ("/ui/",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost).

    Any other name counts as non-loopback: it may resolve to a public address.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without a token.

    Raises:
        ConfigError: ``host`` is reachable from other machines and no token is set.
    """
    if not token and not is_loopback(host):
        raise errors.ConfigError(
            f"refusing to listen on {host} without a token: set QUEUE_API_TOKEN "
            "(clients send it as 'Authorization: Bearer <token>'), or bind 127.0.0.1"
        )


class BearerToken:
    """Requires ``Authorization: Bearer <token>`` on every route but :data:`OPEN_PATHS`
    (checked by :class:`~loops.gateway.front.FrontDoor`)."""

    def __init__(self, token: str) -> None:
        """Check for ``token``, which must be non-empty."""
        if not token:
            raise errors.ConfigError("the API token must not be empty")
        self._expected = f"Bearer {token}".encode()

    def allows(self, header: bytes | None) -> bool:
        """Whether an ``Authorization`` header value carries the token."""
        return header is not None and hmac.compare_digest(header, self._expected)

    def refusal(self, scope: Scope) -> Response | None:
        """The 401 answer to an HTTP request without the token, or ``None`` when it may pass."""
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return None
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if self.allows(header):
            return None
        message = (
            "missing Authorization header: send 'Authorization: Bearer <QUEUE_API_TOKEN>'"
            if header is None
            else "invalid token: send 'Authorization: Bearer <QUEUE_API_TOKEN>'"
        )
        return error_response(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
