"""Request edges: refuse an oversized body, or a request without credentials, before reading it."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from fastapi import Request

from coordinator.errors import BadRequest, CoordinatorError, PayloadTooLarge, Unauthorized
from fedge import protocol


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or :class:`PayloadTooLarge` as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(
                    f"body of {int(declared)} bytes exceeds the {limit}-byte limit"
                )
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


# Routes that read their (binary) body themselves with read_body and ``max_body_bytes``.
_RAW_BODY_ROUTES = re.compile(r"^/v1/(admin/blobs|leases/[^/]+/update)$")
_PUBLIC_ROUTES = {("POST", protocol.REGISTER)}


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or :class:`Unauthorized`."""
    if not authorization:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    return token.strip()


class _BodyTooLarge(Exception):
    pass


class RequestEdges:
    """Checks every request's headers before the app reads a byte of its body (plain ASGI).

    - two ``Authorization`` headers: 400 (which one would count is anyone's guess);
    - a ``/v1`` route that needs a token and has none (or a malformed one): 401;
    - a JSON body over ``json_limit``: 413, by ``Content-Length`` or as soon as the stream
      passes it (the binary uploads have their own, larger limit: :func:`read_body`).
    """

    def __init__(self, app: Any, *, json_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Refuse a request at its edge, or pass it on with its body bounded."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_headers(scope)
        except CoordinatorError as error:
            await _refuse(send, error)
            return
        if _RAW_BODY_ROUTES.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        limit, received, started = self.json_limit, 0, False
        exceeded = False

        async def bounded_receive() -> Any:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if exceeded:  # whatever the app made of the cut-off body, the answer is 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLarge):  # the app may let it through: 413 below
            await self.app(scope, bounded_receive, guarded_send)
        if exceeded and not started:
            await _refuse(send, PayloadTooLarge(f"body exceeds the {limit}-byte limit"))

    def _check_headers(self, scope: Any) -> None:
        authorizations = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(authorizations) > 1:
            raise BadRequest(
                f"{len(authorizations)} Authorization headers: send exactly one "
                "'Authorization: Bearer <token>'"
            )
        path, method = scope["path"], scope["method"]
        if path.startswith(protocol.PREFIX + "/") and (method, path) not in _PUBLIC_ROUTES:
            bearer_token(authorizations[0].decode("latin-1") if authorizations else None)
        if _RAW_BODY_ROUTES.match(path):
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise BadRequest("Content-Length is not a number") from None
                if declared > self.json_limit:
                    raise PayloadTooLarge(
                        f"body of {declared} bytes exceeds the {self.json_limit}-byte limit"
                    )


async def _refuse(send: Any, error: CoordinatorError) -> None:
    body = json.dumps({"error": error.reason, "message": error.message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
