"""Issue 11, finding 13: the token on loopback, a probe that never sends it, no token in logs."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agentd.config import GatewayConfig
from agentd.gateway import EXIT_CONFIG, Gateway, GatewayConfigError, HealthReport, run_gateway
from agentd.gateway.auth import check_bind
from agentd.store import Store
from agentd.supervision.gateway_health import fetch_health

from .gwtools import SHARDS, Recorder, gateway_settings, http_get, running_gateway, until

TOKEN = "tok-5e3cr3t+/x"  # '+' and '/' change under URL quoting: the quoted form is redacted too
SUMMARY_KEYS = {"status", "uptime_s", "connections", "subscriptions", "rooms"}


@pytest.mark.timeout(30)
def test_require_token_refuses_a_loopback_bind_without_a_token(db_uri: str) -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        with pytest.raises(GatewayConfigError, match="require_token") as refused:
            check_bind(GatewayConfig(host=host, require_token=True))
        assert "AGENTD_GATEWAY__TOKEN" in str(refused.value)
        check_bind(GatewayConfig(host=host, require_token=True, token=TOKEN))
    check_bind(GatewayConfig(host="127.0.0.1"))  # the default stays open on loopback
    with pytest.raises(GatewayConfigError, match="require_token"):
        Gateway(gateway_settings(db_uri, require_token=True))
    assert run_gateway(gateway_settings(db_uri, require_token=True)) == EXIT_CONFIG
    assert run_gateway(gateway_settings(db_uri, require_token=True, token="   ")) == EXIT_CONFIG


@pytest.mark.timeout(60)
def test_loopback_gateway_with_require_token(db_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    """The token is required on 127.0.0.1; /healthz answers a summary without it, the detail
    with it; the supervisor's probe gets the summary without sending it; and nothing logged at
    DEBUG (websockets logs request lines and headers there) contains the token."""
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        settings = gateway_settings(db_uri, host="127.0.0.1", require_token=True, token=TOKEN)
        async with running_gateway(settings) as gw:
            url = f"ws://127.0.0.1:{gw.port}/"
            for kwargs in ({}, {"additional_headers": {"Authorization": "Bearer nope"}}):
                with pytest.raises(InvalidStatus) as refused:
                    await connect(url, **kwargs)  # type: ignore[arg-type]
                assert refused.value.response.status_code == 401
            by_header = await Recorder.open(gw.port, additional_headers={"Authorization": f"Bearer {TOKEN}"})
            by_query = await Recorder.open(gw.port, path=f"/?token={quote(TOKEN, safe='')}")
            for client in (by_header, by_query):
                await client.subscribe("run::a1::s1")
            await until(lambda: by_header.of_type("snapshot") and by_query.of_type("snapshot"), 10, "snapshots")

            status, _, body = await http_get(gw.port, "/healthz")
            assert status == 200 and set(json.loads(body)) == SUMMARY_KEYS
            status, _, body = await http_get(gw.port, "/healthz", {"Authorization": "Bearer nope"})
            assert status == 200 and set(json.loads(body)) == SUMMARY_KEYS
            status, _, body = await http_get(gw.port, "/healthz", {"Authorization": f"Bearer {TOKEN}"})
            report = HealthReport.model_validate_json(body)
            assert (report.connections, report.subscriptions) == (2, 2) and "steps" in report.tail

            probed = await fetch_health(GatewayConfig(port=gw.port, token=TOKEN, require_token=True))
            assert set(probed) == SUMMARY_KEYS and probed["status"] == "ok", probed
            assert probed["connections"] == 2
            await by_header.close()
            await by_query.close()

    asyncio.run(scenario())
    # Our side only: the test's own client (logger "websockets.client") logs what it sends.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("agentd"))
    assert "< GET /?token=" in ours and "< Authorization: " in ours, "no debug log: the check proves nothing"
    assert TOKEN not in ours and quote(TOKEN, safe="") not in ours


@pytest.mark.timeout(30)
def test_probe_never_sends_the_token_to_whatever_listens_on_the_port() -> None:
    """A stranger bound to the gateway's port (e.g. after a gateway crash) learns nothing, and
    what it answers only reaches the status output if it is a health summary."""

    async def scenario() -> None:
        received: list[bytes] = []
        answers = [
            b'{"status":"ok","uptime_s":1.0,"connections":0,"subscriptions":0,"rooms":0,"x":"y"}',
            b'{"sessions":["secret stuff"]}',
        ]

        async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.readuntil(b"\r\n\r\n"))
            body = answers[len(received) - 1]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(impostor, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            cfg = GatewayConfig(port=port, token=TOKEN, require_token=True)
            first = await fetch_health(cfg)
            assert first == {"status": "ok", "uptime_s": 1.0, "connections": 0, "subscriptions": 0, "rooms": 0}
            second = await fetch_health(cfg)
            assert set(second) == {"error"} and "secret" not in second["error"]
        assert len(received) == 2
        for request in received:
            assert TOKEN.encode() not in request and b"authorization" not in request.lower(), request

    asyncio.run(scenario())
