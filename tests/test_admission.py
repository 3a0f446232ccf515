"""Upgrade authentication for every provider: URL token, bearer token, Twilio's signature."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from vobiz_async.server import MediaServer, StreamSession, serve

V7_KEY = "example-twilio-auth-token"  # compat spec 7.8, vector V7 (WebSocket upgrade)
V7_SIGNATURE = "Xh+GThYa4c5cizoA3kvEKCCr8oY="


async def idle(session: StreamSession) -> None:
    await session.wait_closed()


async def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    """101 when the upgrade is accepted, else the HTTP status it was refused with."""
    try:
        async with connect(url, additional_headers=headers or {}, open_timeout=5):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_a_bearer_token_is_accepted_like_a_url_token() -> None:
    """SignalWire's authBearerToken arrives as Authorization: Bearer (compat spec 4.1)."""
    async with serve(idle, "127.0.0.1", 0, token="s3cret") as server:
        assert await status_of(server.url, {"Authorization": "Bearer s3cret"}) == 101
        assert await status_of(server.url, {"Authorization": "Bearer wrong"}) == 403
        assert await status_of(server.url) == 401
        assert await status_of(server.url + "?token=s3cret") == 101
        assert server.stats.rejected_auth == 2


async def test_twilio_signature_on_the_upgrade_is_verified() -> None:
    """X-Twilio-Signature over the public wss:// URL (vector V7) admits; others get 403."""
    async with serve(
        idle,
        "127.0.0.1",
        0,
        path="/media",
        twilio_auth_token=V7_KEY,
        public_url="wss://agent.example.net",
    ) as server:
        url = f"ws://127.0.0.1:{server.port}/media/7d1e4c"
        assert await status_of(url, {"X-Twilio-Signature": V7_SIGNATURE}) == 101
        assert await status_of(url, {"X-Twilio-Signature": "AAAA" + V7_SIGNATURE[4:]}) == 403
        assert await status_of(url) == 403
        other = f"ws://127.0.0.1:{server.port}/media/other"
        assert await status_of(other, {"X-Twilio-Signature": V7_SIGNATURE}) == 403
        assert server.url == "wss://agent.example.net/media"


async def test_admit_is_the_same_check_for_every_transport() -> None:
    """A socketless MediaServer answers admit() as the listener would."""
    async with MediaServer(idle, token="t", path="/media") as server:
        assert server.admit("/media?token=t", {}).ok
        assert server.admit("/media/t", {}).ok
        assert server.admit("/media", {"Authorization": "Bearer t"}).ok
        refused = server.admit("/media", {})
        assert (refused.ok, refused.status, refused.reason) == (False, 401, "missing")
        assert server.admit("/elsewhere?token=t", {}).status == 404
        assert server.admit("//[x", {}).status == 400


async def test_a_socketless_server_refuses_to_listen_without_a_host() -> None:
    """start() on a MediaServer made for an adapter is a clear error."""
    from vobiz_async.errors import ValidationError

    async with MediaServer(idle, token="t") as server:
        with pytest.raises(ValidationError, match="no socket"):
            await server.start()
