"""Webhook signatures: a push notification is trusted only if it proves it knows the secret.

GitHub (and Gitea, Forgejo) sign the raw request body with HMAC-SHA256 and send
`X-Hub-Signature-256: sha256=<hex>`. `sign` and `verify_signature` are pure: the route hands
over the bytes it received, before any parsing, because re-serialised JSON would not match.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from reconciler.server.backend import Backend
from reconciler.server.errors import described, error_response

HEADER = "X-Hub-Signature-256"
PREFIX = "sha256="
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGEST_HEX_LENGTH = 2 * hashlib.sha256().digest_size


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Hub-Signature-256` value for `body`, as GitHub computes it (for tests and
    clients). An empty secret is refused: anyone could produce its signatures."""
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` is the signature of the raw `body` with `secret`.

    Anything malformed is simply False (the caller answers 401 either way, and says nothing
    about why); the digests are compared in constant time so that timing reveals nothing of
    the expected one. An empty secret verifies nothing.
    """
    if not secret:
        return False
    return signature_matches(hmac.new(secret, body, hashlib.sha256), header)


def signature_matches(mac: hmac.HMAC, header: str | None) -> bool:
    """Whether `header` is the digest of `mac` (fed the body as it arrived): the route never
    holds a whole body, only a running HMAC of it."""
    if header is None or not header.startswith(PREFIX):
        return False
    given = header[len(PREFIX) :]
    if len(given) != _DIGEST_HEX_LENGTH or not _HEX.issuperset(given):
        return False
    return hmac.compare_digest(bytes.fromhex(given), mac.digest())


def install(app: FastAPI, backend: Backend, secret: bytes | None) -> None:
    """`POST /v1/hooks/git`: a GitHub-style push webhook asks for a fetch at once."""

    @app.post(
        "/v1/hooks/git",
        status_code=202,
        operation_id="postGitHook",
        tags=["webhook"],
        responses=described(
            _401="The signature is missing or wrong.",
            _404="The controller runs without --webhook-secret-file.",
            _413="The body is over 25 MiB (GitHub sends no larger payload).",
        ),
    )
    async def git_hook(request: Request) -> Response:
        """`X-Hub-Signature-256` over the raw body, then fetch the branch at once."""
        if secret is None:
            return error_response(404, "webhook is not configured")
        mac = hmac.new(secret, digestmod=hashlib.sha256)
        async for chunk in request.stream():  # hashed as it arrives, never held whole
            mac.update(chunk)
        header = request.headers.get("x-hub-signature-256")
        if not secret or not signature_matches(mac, header):  # an empty secret proves nothing
            return error_response(401, "bad signature")
        backend.wake()
        return JSONResponse({"status": "fetching"}, status_code=202)
