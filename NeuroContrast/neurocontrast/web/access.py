"""Who may open a served page: the bind address and the per-reader access token (pure Python).

A server binds to 127.0.0.1 unless ``--host`` names another address. A server reachable from other machines
requires an access token: the first request must carry ``?token=<token>``; the server then sets an HttpOnly,
SameSite=Strict cookie and every later request (page, assets, the websocket that carries the views and the
state) must carry that cookie. Each reader's server has its own token, kept in
``<study>/web/<reader>.token`` (mode 0600) so that the reader's link survives a server restart; a reader
holding R1's link cannot open R2's server.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from neurocontrast.errors import NeuroContrastError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
TOKEN_COOKIE = "neurocontrast_token"
TOKEN_FOLDER = "web"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str:
    """The warning printed when a server is reachable from other machines."""
    return (f"WARNING: serving on {host}:{port}, reachable from other machines. Only readers with the access "
            "link can open it; use it inside the hospital network or behind a TLS reverse proxy (the link is "
            "sent in clear over plain http).")


def reader_token(study_folder, reader: str, renew: bool = False) -> str:
    """The reader's access token, created on first use in ``<study>/web/<reader>.token`` (0600).

    ``renew=True`` replaces it (the old link stops working). Raises NeuroContrastError on an unsafe reader id.
    """
    if not reader or any(c in reader for c in "/\\") or reader.startswith("."):
        raise NeuroContrastError(f"reader id {reader!r} cannot name a token file")
    folder = Path(study_folder) / TOKEN_FOLDER
    path = folder / f"{reader}.token"
    if path.exists() and not renew:
        token = path.read_text(encoding="utf-8").strip()
        if len(token) >= 20:
            return token
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.replace(tmp, path)
    return token


@dataclass(frozen=True)
class AccessPolicy:
    """Bind address and token of one server. ``token`` is None on a loopback address (no token needed).

    Raises NeuroContrastError for a port outside 1..65535 or an exposed host without a token.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: Optional[str] = None

    def __post_init__(self):
        if not 0 < int(self.port) < 65536:
            raise NeuroContrastError(f"--port must lie in 1..65535, got {self.port}")
        if not is_loopback(self.host) and not self.token:
            raise NeuroContrastError(f"serving on {self.host} needs an access token")

    @property
    def exposed(self) -> bool:
        return not is_loopback(self.host)

    def url(self, public_host: Optional[str] = None) -> str:
        """The link to send: ``http://host:port/`` plus ``?token=`` when a token is required."""
        host = public_host or self.host
        if host in ("0.0.0.0", "::"):
            host = "<this-machine's-address>"
        base = f"http://{host}:{self.port}/"
        return f"{base}?token={self.token}" if self.token else base

    def allows(self, query_token: Optional[str], cookie_token: Optional[str]) -> bool:
        """Whether a request with this query/cookie token may pass (constant-time comparison)."""
        if not self.token:
            return True
        for given in (query_token, cookie_token):
            if given and hmac.compare_digest(str(given), self.token):
                return True
        return False


def install_token_gate(server, policy: AccessPolicy) -> None:
    """Add an aiohttp middleware to a trame server that refuses requests without the token (HTTP 403)
    and sets the cookie on the first valid request. No-op for a policy without a token."""
    if not policy.token:
        return
    from aiohttp import web

    @web.middleware
    async def gate(request, handler):
        query, cookie = request.query.get("token"), request.cookies.get(TOKEN_COOKIE)
        if not policy.allows(query, cookie):
            return web.Response(status=403, text="NeuroContrast: this page needs the access link with its token.")
        response = await handler(request)
        if query and cookie != policy.token and not getattr(response, "prepared", False):
            response.set_cookie(TOKEN_COOKIE, policy.token, httponly=True, samesite="Strict")
        return response

    def bind(wslink_server):
        wslink_server.app.middlewares.append(gate)

    server.controller.on_server_bind.add(bind)
