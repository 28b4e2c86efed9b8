"""The dashboard's login cookie: a signed expiry, never the admin token itself.

The value is ``v1.<expires>.<nonce>.<mac>``, the MAC an HMAC-SHA256 under a key derived from the
admin token. Stateless, so every worker and replica that shares the admin token accepts it, and
changing the token logs every browser out. Logout deletes the cookie in the browser; a copied
value stays valid until it expires, which is why the lifetime is short (:data:`LIFETIME`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

NAME = "fedge_dashboard"
LIFETIME = 8 * 3600.0  # a working day; then the login form again
_VERSION = "v1"


def _key(admin_token: str) -> bytes:
    return hmac.new(admin_token.encode(), b"fedge dashboard cookie", hashlib.sha256).digest()


def _mac(admin_token: str, message: str) -> str:
    return hmac.new(_key(admin_token), message.encode(), hashlib.sha256).hexdigest()


def issue(admin_token: str, *, now: float, lifetime: float = LIFETIME) -> str:
    """A cookie value valid until ``now + lifetime``."""
    message = f"{_VERSION}.{int(now + lifetime)}.{secrets.token_urlsafe(12)}"
    return f"{message}.{_mac(admin_token, message)}"


def is_valid(admin_token: str, value: str, *, now: float) -> bool:
    """Whether ``value`` was issued under ``admin_token`` and has not expired at ``now``."""
    message, _, mac = value.rpartition(".")
    version, _, rest = message.partition(".")
    expires, _, nonce = rest.partition(".")
    if version != _VERSION or not nonce or not expires.isdigit():
        return False
    if not hmac.compare_digest(mac.encode(), _mac(admin_token, message).encode()):
        return False
    return now < int(expires)
