"""The gateway's browser-facing HTTP: login cookie, 401s, Origin and Host checks, read-only mode.

Real gateway in-process, real websockets clients and raw HTTP requests; no daemon is running, so
an action from the console must say at once that nothing was queued.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agentd.queue import ActionQueue
from agentd.store import Store
from agentd.store.sessions import SessionRecord, upsert_sessions
from agentd.timeutil import utcnow

from .gwtools import SHARDS, Recorder, gateway_settings, http_get, procs, running_gateway, until, wait_exit

TOKEN = "s3cret-token-for-tests"
pytestmark = pytest.mark.timeout(60)


async def _status_of_upgrade(port: int, **kwargs: object) -> int:
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws", **kwargs):  # type: ignore[arg-type]
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_login_sets_an_httponly_cookie_wrong_token_401(db_uri: str) -> None:
    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri, token=TOKEN)) as gw:
            # The console's files are public (they hold no data); its reads are not.
            status, headers, body = await http_get(gw.port, "/")
            assert status == 200 and b"agentd console" in body
            assert "default-src 'self'" in headers["content-security-policy"]
            status, headers, _ = await http_get(gw.port, "/ui/app.js")
            assert status == 200 and headers["content-type"].startswith("text/javascript")
            assert (await http_get(gw.port, "/api/me"))[0] == 401
            assert (await http_get(gw.port, "/metrics"))[0] == 401

            assert (await http_get(gw.port, "/login", method="POST"))[0] == 401
            wrong = {"Authorization": "Bearer nope"}
            assert (await http_get(gw.port, "/login", wrong, method="POST"))[0] == 401
            assert (await http_get(gw.port, "/login", {"Authorization": f"Bearer {TOKEN}"}))[0] == 405

            status, headers, _ = await http_get(gw.port, "/login", {"Authorization": f"Bearer {TOKEN}"}, method="POST")
            assert status == 200
            cookie = headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
            assert TOKEN not in cookie
            pair = cookie.split(";", 1)[0]

            status, _, body = await http_get(gw.port, "/api/me", {"Cookie": pair})
            assert status == 200 and json.loads(body) == {
                "auth": True,
                "token_required": True,
                "control": True,
                "heartbeat_interval": 1.0,
            }
            assert (await http_get(gw.port, "/api/me", {"Cookie": pair[:-2] + "00"}))[0] == 401
            assert (await http_get(gw.port, "/metrics", {"Authorization": f"Bearer {TOKEN}"}))[0] == 200

            # A WebSocket with the cookie (what the console's page does) or the token; nothing else.
            assert await _status_of_upgrade(gw.port, additional_headers={"Cookie": pair}) == 101
            assert await _status_of_upgrade(gw.port, additional_headers={"Cookie": "agentd_console=x"}) == 401
            assert await _status_of_upgrade(gw.port) == 401

            status, headers, _ = await http_get(gw.port, "/logout", method="POST")
            assert status == 200 and "Max-Age=0" in headers["set-cookie"]

    asyncio.run(scenario())


def test_origin_and_host_checks(db_uri: str) -> None:
    """Cross-site WebSocket hijacking and DNS rebinding are refused with 403."""

    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        settings = gateway_settings(db_uri, allowed_origins=["https://ops.example:9000"])
        async with running_gateway(settings) as gw:
            own = f"http://127.0.0.1:{gw.port}"
            assert await _status_of_upgrade(gw.port) == 101  # no Origin: not a browser
            assert await _status_of_upgrade(gw.port, origin=own) == 101
            assert await _status_of_upgrade(gw.port, origin="https://ops.example:9000") == 101
            assert await _status_of_upgrade(gw.port, origin="http://evil.example") == 403
            assert await _status_of_upgrade(gw.port, origin="null") == 403
            assert await _status_of_upgrade(gw.port, origin=f"http://localhost:{gw.port}") == 403  # Host differs
            # DNS rebinding: evil.example resolves to 127.0.0.1, so the page is "same-origin" with itself.
            rebound = {"Host": f"evil.example:{gw.port}", "Origin": f"http://evil.example:{gw.port}"}
            assert (await http_get(gw.port, "/api/sessions", rebound))[0] == 403
            assert (await http_get(gw.port, "/api/sessions", {"Host": f"evil.example:{gw.port}"}))[0] == 403
            assert (await http_get(gw.port, "/api/sessions", {"Origin": "http://evil.example"}))[0] == 403
            assert (await http_get(gw.port, "/api/sessions", {"Host": f"localhost:{gw.port}"}))[0] == 200
            assert gw.stats.delivery.rejected_origin >= 6

    asyncio.run(scenario())


def test_read_only_console_and_no_daemon(db_uri: str) -> None:
    """control = false rejects ops clearly; with control on and no daemon, nothing is queued."""

    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri, control=False)) as gw:
            client = await Recorder.open(gw.port)
            await client.send({"op": "action", "kind": "pause", "session_id": "s1", "id": 1})
            await client.send({"op": "post", "conversation_id": "c1", "text": "hi", "id": 2})
            await until(lambda: client.of_type("ack") and client.of_type("posted"), 10, "answers")
            ack, posted = client.of_type("ack")[0], client.of_type("posted")[0]
            assert (ack["id"], ack["status"], ack["code"]) == (1, "failed", "forbidden")
            assert "read-only" in ack["error"] and "[gateway] control = false" in ack["error"]
            assert (posted["id"], posted["status"], posted["code"]) == (2, "failed", "forbidden")
            _, _, body = await http_get(gw.port, "/api/me")
            assert json.loads(body)["control"] is False
            await client.close()
        async with running_gateway(gateway_settings(db_uri)) as gw:
            client = await Recorder.open(gw.port)
            await client.send({"op": "action", "kind": "pause", "session_id": "s1", "id": "p"})
            await client.send({"op": "action", "kind": "pause", "session_id": "bad id", "id": "q"})
            await client.send({"op": "post", "conversation_id": "nope", "text": "hi", "id": 3})
            await until(lambda: len(client.of_type("ack")) == 2 and client.of_type("posted"), 10, "answers")
            acks = {a["id"]: a for a in client.of_type("ack")}
            assert (acks["p"]["status"], acks["p"]["code"]) == ("failed", "unavailable")
            assert "no daemon answers" in acks["p"]["error"] and "nothing was queued" in acks["p"]["error"]
            assert (acks["q"]["status"], acks["q"]["code"]) == ("failed", "invalid")
            assert client.of_type("posted")[0]["code"] == "not_found"
            assert await store.actions.count_rows() == 0
            await client.close()

    asyncio.run(scenario())


def test_session_room_under_another_agent_id_gets_an_error(db_uri: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri)) as gw:
            with procs(tmp_path) as p:
                writer = p.writer(db_uri, "w", "--agent", "a1", "--sessions", "s1", "--upto", "3")
                assert await wait_exit(writer, 30) == 0, p.stderr("w")
            client = await Recorder.open(gw.port)
            await client.subscribe("run::other::s1")
            await client.subscribe("run::a1::s1")
            await until(lambda: client.of_type("error") and client.of_type("snapshot"), 10, "error + snapshot")
            error = client.of_type("error")[0]
            assert (error["code"], error["room"], error["op"]) == ("wrong_agent", "run::other::s1", "subscribe")
            assert "belongs to agent 'a1', not 'other'" in error["error"] and "run::a1::s1" in error["error"]
            assert [s["seq"] for s in client.of_type("snapshot")[0]["steps"]] == [1, 2, 3]
            # The room of a session that does not exist (yet) stays an empty snapshot, as before.
            await client.subscribe("run::a1::later")
            await until(lambda: len(client.of_type("snapshot")) == 2, 10, "second snapshot")
            assert client.of_type("snapshot")[1]["state"] is None
            await client.close()

    asyncio.run(scenario())


# The scale: a fleet view that pages 10,000+ sessions.
FLEET = 10_000


def test_fleet_reads_page_filter_and_count_thousands_of_sessions(db_uri: str) -> None:
    """/api/sessions pages 10,000 sessions (filters, counts, sort); /api/sessions/<id> lists pending actions."""

    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        now = utcnow()
        records = [
            SessionRecord(
                session_id=f"s-{i:05d}",
                agent_id=f"agent-{i % 50}",
                agent_type="joke" if i % 4 else "persona",
                shard=i % SHARDS,
                status=("running", "paused", "stopped")[i % 3],
                config={"interval": 2.0} if i == 3 else {},
                context={"subject": "cats"},
                iteration=i,
                last_seq=i,
                created_at=now,
                updated_at=now - timedelta(seconds=5),
            )
            for i in range(FLEET)
        ]
        await upsert_sessions(store.sessions, records)
        queue = ActionQueue(store.actions, SHARDS)
        queued = await queue.enqueue("interrupt", "s-00003", {"guidance": "about dogs", "now": False})
        async with running_gateway(gateway_settings(db_uri)) as gw:

            async def get(path: str) -> tuple[int, dict[str, object]]:
                status, _, body = await http_get(gw.port, path)
                return status, json.loads(body)

            status, page = await get("/api/sessions")
            assert status == 200 and page["total"] == FLEET and len(page["items"]) == 50  # type: ignore[arg-type]
            assert page["counts"] == {
                "starting": 0, "running": 3_334, "paused": 3_333, "stopping": 0, "stopped": 3_333, "error": 0
            }  # fmt: skip
            assert page["types"] == ["joke", "persona"]
            first = page["items"][0]  # type: ignore[index]
            assert first["session_id"] == "s-00000" and first["status"] == "running"
            assert first["late_s"] >= 3.9 and first["age_s"] >= 4.9  # interval 1 s (the default)

            _, page = await get(f"/api/sessions?offset={FLEET - 20}&limit=50")
            assert [i["session_id"] for i in page["items"]] == [f"s-{i:05d}" for i in range(FLEET - 20, FLEET)]  # type: ignore[union-attr]
            _, page = await get("/api/sessions?agent=agent-7&status=paused&type=joke")
            ids = [i["session_id"] for i in page["items"]]  # type: ignore[union-attr]
            assert ids and all(int(s[2:]) % 50 == 7 and int(s[2:]) % 3 == 1 and int(s[2:]) % 4 for s in ids)
            _, page = await get("/api/sessions?sort=iteration&desc=1&limit=3")
            assert [i["iteration"] for i in page["items"]] == [FLEET - 1, FLEET - 2, FLEET - 3]  # type: ignore[union-attr]
            _, page = await get("/api/sessions?limit=100000")
            assert page["limit"] == 500 and len(page["items"]) == 500  # type: ignore[arg-type]
            assert (await get("/api/sessions?offset=x"))[0] == 400
            assert (await get("/api/sessions?sort=password"))[0] == 400

            status, detail = await get("/api/sessions/s-00003")
            assert status == 200 and detail["session"]["context"] == {"subject": "cats"}  # type: ignore[index]
            assert [a["action_id"] for a in detail["pending"]] == [queued.action_id]  # type: ignore[union-attr]
            assert (await get("/api/sessions/s-99999"))[0] == 404
            assert (await get("/api/sessions/bad%20id"))[0] == 400
            assert (await get("/api/nothing"))[0] == 404
            status, daemon = await get("/api/daemon")
            assert status == 200 and daemon["supervisor"] is None and "no daemon answers" in str(daemon["error"])
            assert daemon["gateway"]["status"] == "ok"  # type: ignore[index]

    asyncio.run(scenario())
