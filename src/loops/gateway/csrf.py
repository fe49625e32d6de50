"""Cross-site request forgery: a web page must not change the queue through a browser.

The gateway listens on loopback without a token by default, so any page a local user
visits could aim a form or a ``fetch`` at ``http://127.0.0.1:<port>``. Browsers send
such cross-site requests without asking the server first only when their content type
is one of the three "simple" ones (``application/x-www-form-urlencoded``,
``multipart/form-data``, ``text/plain``); any other type (``application/json``, the
artifact upload's ``application/octet-stream``) needs a CORS preflight, which the
gateway never grants. So a state-changing request (POST, PUT, PATCH, DELETE) is refused:

- with 415 ``unsupported_media_type`` when its content type is a simple one;
- with 403 ``forbidden_origin`` when it carries an ``Origin`` header naming another
  origin than the gateway's own (the ``Host`` it was addressed to).

Clients that send no ``Origin`` (curl, the worker, scripts) and use JSON are unaffected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import Scope

from loops.gateway.errors import error_response

#: methods that change state
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: content types a browser sends cross-site without a preflight
SIMPLE_CONTENT_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def same_origin(origin: str, host: str | None) -> bool:
    """Whether the ``Origin`` header names the host:port the request was sent to."""
    if origin == "null" or host is None:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    default = "443" if parts.scheme == "https" else "80"
    netloc = parts.netloc.lower()
    wanted = host.lower()
    with_port = netloc if ":" in netloc.rsplit("]", 1)[-1] else f"{netloc}:{default}"
    wanted_port = wanted if ":" in wanted.rsplit("]", 1)[-1] else f"{wanted}:{default}"
    return with_port == wanted_port


def refusal(scope: Scope) -> Response | None:
    """The answer refusing a cross-site state change (see the module docstring), or
    ``None`` when the HTTP request may pass (checked by
    :class:`~loops.gateway.front.FrontDoor`)."""
    if scope["method"] not in UNSAFE_METHODS:
        return None
    content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if content_type in SIMPLE_CONTENT_TYPES:
        message = (
            f"content type {content_type} is refused on {scope['method']} (a browser "
            "form could send it cross-site); send application/json, or "
            "application/octet-stream for an artifact's raw body"
        )
        return error_response(415, "unsupported_media_type", message)
    origin = _header(scope, b"origin")
    if origin is not None and not same_origin(origin, _header(scope, b"host")):
        message = (
            f"cross-origin request from {origin} refused; state changes are accepted "
            "only from the gateway's own origin or from clients that send no Origin"
        )
        return error_response(403, "forbidden_origin", message)
    return None
