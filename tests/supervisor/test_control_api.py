"""The control API on the daemon's socket: batches, pushed acks, hostile clients, faults.

Every test drives the real daemon (`agentd run`, real workers, a real LanceDB directory) over
its real unix socket with raw protocol lines, and checks the stored data afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from agentd.protocol import MAX_LINE

from .daemon import all_steps, running, write_config

pytestmark = pytest.mark.timeout(180)


def _connect(path: Path, timeout: float = 30.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock


def converse(path: Path, request: dict[str, Any], timeout: float = 30.0) -> list[dict[str, Any]]:
    """Send one request; read replies until the one that ends it (end, result, error, legacy)."""
    with _connect(path, timeout) as sock:
        sock.sendall((json.dumps(request) + "\n").encode())
        replies: list[dict[str, Any]] = []
        for line in sock.makefile("rb"):
            reply = json.loads(line)
            replies.append(reply)
            if reply.get("type") in ("end", "result", "error") or "ok" in reply:
                return replies
    raise AssertionError(f"connection closed after {replies}")


def create_item(session_id: str, **config: Any) -> dict[str, Any]:
    payload = {"agent_type": "joke", "agent_id": "fleet", "config": config}
    return {"kind": "create", "session_id": session_id, "payload": payload}


def acks_of(replies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["session_id"]: r for r in replies if r.get("type") == "ack"}


def test_a_batch_queues_the_valid_items_reports_the_invalid_ones_and_acks_by_push(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with running(config, tmp_path / "daemon.log") as daemon:
        sock = daemon.settings.control_socket_path
        replies = converse(
            sock,
            {
                "v": 1,
                "op": "submit",
                "items": [
                    create_item("s-ok-1"),
                    {"kind": "create", "session_id": "bad id!"},
                    {"kind": "explode", "session_id": "s-x"},
                    {"kind": "pause", "session_id": "s-nobody"},
                    create_item("s-ok-2"),
                ],
            },
        )
        accepted, *rest = replies
        assert accepted["type"] == "accepted"
        assert [a["index"] for a in accepted["actions"]] == [0, 3, 4]
        invalid = {i["index"]: i for i in accepted["invalid"]}
        assert set(invalid) == {1, 2}
        assert "session id" in invalid[1]["error"] and invalid[2]["code"] == "invalid"
        acks = acks_of(rest)
        assert acks["s-ok-1"]["status"] == acks["s-ok-2"]["status"] == "done"
        assert acks["s-nobody"]["status"] == "failed" and acks["s-nobody"]["code"] == "not_found"
        assert rest[-1] == {"type": "end", "pending": []}
        # The row holds the same typed code: the no-daemon path reads it from there.
        guided = converse(
            sock,
            {
                "op": "submit",
                "items": [{"kind": "interrupt", "session_id": "s-ok-1", "payload": {"guidance": "about owls"}}],
            },
        )
        receipt = acks_of(guided)["s-ok-1"]
        assert receipt["status"] == "done" and receipt["result"]["seq"] >= 2
    steps = [s for s in all_steps(daemon.settings) if s.session_id == "s-ok-1" and s.kind == "guidance"]
    assert [s.seq for s in steps] == [receipt["result"]["seq"]]
    assert steps[0].action_id == receipt["action_id"]
    assert not [s for s in all_steps(daemon.settings) if s.session_id in ("bad id!", "s-x", "s-nobody")]


def test_the_socket_survives_hostile_clients_and_keeps_serving(tmp_path: Path) -> None:
    """Random bytes, an over-long line, a half-close, a client that never reads, 1,000 at once."""
    config = write_config(tmp_path)
    with running(config, tmp_path / "daemon.log") as daemon:
        path = daemon.settings.control_socket_path
        assert acks_of(converse(path, {"op": "submit", "items": [create_item("s-live")]}))["s-live"]["status"] == "done"

        # Random bytes and invalid JSON: an error each, and the connection stays usable.
        with _connect(path) as sock:
            stream = sock.makefile("rwb")
            for junk in (os.urandom(200).replace(b"\n", b" "), b"{not json", b"[1,2]", b'{"op": 7}'):
                stream.write(junk + b"\n")
                stream.flush()
                reply = json.loads(stream.readline())
                assert reply["type"] == "error" and reply["code"] == "bad_request"
            stream.write(b'{"op": "status"}\n')
            stream.flush()
            assert json.loads(stream.readline())["ok"] is True

        # A line over the limit (100 MB sent): an error, then the connection is closed.
        with _connect(path) as sock:
            chunk = b"x" * (1 << 20)
            try:
                for _ in range(100):
                    sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed on us mid-send: allowed
            data = b""
            try:
                while True:
                    more = sock.recv(65536)
                    if not more:
                        break
                    data += more
            except ConnectionResetError:
                pass
            if data:
                assert json.loads(data.splitlines()[0])["code"] == "bad_request"
            assert len(data) < MAX_LINE

        # Half-closed after a request: it is still answered.
        with _connect(path) as sock:
            sock.sendall(b'{"op": "read", "view": "daemon_status"}\n')
            sock.shutdown(socket.SHUT_WR)
            assert json.loads(sock.makefile("rb").readline())["type"] == "result"

        # A client that never reads its replies: dropped, while others are served meanwhile.
        never_reads = _connect(path)
        never_reads.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        never_reads.sendall(b'{"op": "read", "view": "daemon_status"}\n' * 5000)
        started = time.monotonic()
        assert converse(path, {"op": "status"})[0]["ok"] is True
        assert time.monotonic() - started < 5

        # 1,000 connections at once.
        async def crowd() -> list[bool]:
            async def one() -> bool:
                reader, writer = await asyncio.open_unix_connection(str(path))
                writer.write(b'{"op": "status"}\n')
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 60)
                writer.close()
                return bool(json.loads(line).get("ok"))

            return await asyncio.gather(*(one() for _ in range(1000)))

        assert all(asyncio.run(crowd()))
        never_reads.close()

        # Sessions kept ticking and a new action is still applied once.
        done = acks_of(converse(path, {"op": "submit", "items": [{"kind": "pause", "session_id": "s-live"}]}))
        assert done["s-live"]["status"] == "done"
        assert daemon.proc.poll() is None
    ticks = [s for s in all_steps(daemon.settings) if s.session_id == "s-live" and s.kind == "tick"]
    assert ticks, "the session did not tick while the socket was under abuse"


@pytest.mark.skipif(os.getuid() != 0 or not Path("/usr/bin/python3").exists(), reason="needs root and /usr/bin/python3")
def test_a_peer_of_another_uid_is_refused(tmp_path: Path) -> None:
    # The socket lives where another user can reach it (a directory of mode 0755 under /tmp).
    public = Path(tempfile.mkdtemp(prefix="agentd-ctl-"))
    public.chmod(0o755)
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("[daemon]\n", f'[daemon]\ncontrol_socket = "{public}/ctl.sock"\n'))
    try:
        with running(config, tmp_path / "daemon.log") as daemon:
            path = daemon.settings.control_socket_path
            assert path.parent == public and path.stat().st_mode & 0o777 == 0o600
            # Loosen the file mode (a mistake an operator could make): the uid check still refuses.
            os.chmod(path, 0o666)
            nobody = pwd.getpwnam("nobody")
            probe = (
                "import json, socket, sys\n"
                "s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])\n"
                "try:\n"
                '    s.sendall(b\'{"op": "submit", "items": [{"kind": "pause", "session_id": "s-1"}]}\\n\')\n'
                "except BrokenPipeError:\n"  # refused before it wrote: the reply is still there to read
                "    pass\n"
                "print(s.makefile('rb').readline().decode())\n"
            )
            out = subprocess.run(
                ["/usr/bin/python3", "-I", "-c", probe, str(path)],
                user=nobody.pw_uid,
                group=nobody.pw_gid,
                capture_output=True,
                text=True,
                timeout=30,
                cwd="/",
            )
            assert out.stdout.strip(), out
            reply = json.loads(out.stdout)
            assert reply["type"] == "error" and reply["code"] == "forbidden", out
    finally:
        shutil.rmtree(public, ignore_errors=True)
    assert not [s for s in all_steps(daemon.settings) if s.session_id == "s-1"]


def test_a_worker_killed_while_a_client_waits_still_acknowledges_once(tmp_path: Path) -> None:
    """Killed after the effect is durable and before the ack: the replacement acks, the client hears it."""
    config = write_config(tmp_path)
    env = {"AGENTD_FAULTS": "after-effect:interrupt=kill-once", "AGENTD_FAULTS_ONCE": str(tmp_path / "fired")}
    with running(config, tmp_path / "daemon.log", env=env) as daemon:
        path = daemon.settings.control_socket_path
        assert acks_of(converse(path, {"op": "submit", "items": [create_item("s-k")]}))["s-k"]["status"] == "done"
        before = {w["index"]: w["pid"] for w in daemon.workers().values()}
        replies = converse(
            path,
            {
                "op": "submit",
                "items": [{"kind": "interrupt", "session_id": "s-k", "payload": {"guidance": "about owls"}}],
                "timeout": 60,
            },
            timeout=90,
        )
        assert (tmp_path / "fired").exists(), daemon.tail()
        ack = acks_of(replies)["s-k"]
        assert ack["status"] == "done", replies
        assert replies[-1]["pending"] == []
        after = {w["index"]: w["pid"] for w in daemon.workers().values()}
        assert before != after, "no worker was replaced"
    guided = [s for s in all_steps(daemon.settings) if s.session_id == "s-k" and s.kind == "guidance"]
    assert len(guided) == 1 and guided[0].action_id == ack["action_id"]


def test_clients_waiting_when_the_supervisor_dies_are_cut_off_not_told_success(tmp_path: Path) -> None:
    """SIGKILL the whole daemon while a client waits: the client sees EOF, and the action stays queued."""
    config = write_config(tmp_path, workers=1, warm_spare="false")
    log = tmp_path / "daemon.log"
    with running(config, log) as daemon:
        path = daemon.settings.control_socket_path
        assert acks_of(converse(path, {"op": "submit", "items": [create_item("s-r")]}))["s-r"]["status"] == "done"
        # Stop the only worker: the action is queued but nobody applies it while we wait.
        worker = daemon.workers()[0]
        os.kill(worker["pid"], signal.SIGSTOP)
        sock = _connect(path, timeout=30)
        sock.sendall(b'{"op": "submit", "items": [{"kind": "pause", "session_id": "s-r"}], "timeout": 60}\n')
        stream = sock.makefile("rb")
        accepted = json.loads(stream.readline())
        assert accepted["type"] == "accepted"
        action_id = accepted["actions"][0]["action_id"]
        daemon.kill_all()
        rest = stream.read()
        sock.close()
        assert b'"ack"' not in rest
    # A new daemon applies it exactly once.
    with running(config, log) as daemon:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pauses = [s for s in all_steps(daemon.settings) if s.action_id == action_id]
            if pauses:
                break
            time.sleep(0.2)
        assert len(pauses) == 1 and pauses[0].text == "paused", pauses


def test_what_a_client_reads_after_an_ack_already_shows_the_action(tmp_path: Path) -> None:
    """Pause/resume/interrupt are acknowledged once their step commits, a commit before the
    session rows; a ``list`` or ``status`` sent right after the ack must still show the effect."""
    config = write_config(tmp_path)
    with running(config, tmp_path / "daemon.log") as daemon:
        path = daemon.settings.control_socket_path
        ids = [f"s-rw-{i}" for i in range(20)]
        created = acks_of(converse(path, {"op": "submit", "items": [create_item(s) for s in ids]}))
        assert {a["status"] for a in created.values()} == {"done"}
        for round_ in range(6):
            kind, want = ("pause", "paused") if round_ % 2 == 0 else ("resume", "running")
            acks = acks_of(converse(path, {"op": "submit", "items": [{"kind": kind, "session_id": s} for s in ids]}))
            assert {a["status"] for a in acks.values()} == {"done"}, acks
            [listed] = converse(path, {"op": "read", "view": "list", "params": {"agent_id": "fleet"}})
            statuses = {row["session_id"]: row["status"] for row in listed["data"]}
            assert statuses == dict.fromkeys(ids, want), (round_, statuses)
            guide = {"kind": "interrupt", "session_id": ids[0], "payload": {"guidance": f"about owls {round_}"}}
            ack = acks_of(converse(path, {"op": "submit", "items": [guide]}))[ids[0]]
            [status] = converse(path, {"op": "read", "view": "status", "params": {"session_id": ids[0]}})
            assert status["data"]["last_seq"] >= ack["result"]["seq"], (status, ack)
            assert status["data"]["context"]["subject"] == f"owls {round_}"
            assert ack["action_id"] not in {a["action_id"] for a in status["data"]["queued_actions"]}
            params = {"session_id": ids[0], "statuses": ["done"]}
            [done] = converse(path, {"op": "read", "view": "actions", "params": params})
            assert ack["action_id"] in {a["action_id"] for a in done["data"]}, "row not followed"


def test_a_big_batch_is_handed_to_a_worker_in_several_wakes_in_order() -> None:
    """Every appended row goes with a wake (claimed by id, not found by a scan), 2,000 a message."""
    from agentd.supervision.control_api import MAX_OFFERED, wake_messages

    rows = [{"action_id": f"a-{i}"} for i in range(2 * MAX_OFFERED + 500)]
    wakes = wake_messages(rows)
    assert [len(w.actions) for w in wakes] == [MAX_OFFERED, MAX_OFFERED, 500]
    assert [row for w in wakes for row in w.actions] == rows
    assert not any(w.look for w in wakes)
    [empty] = wake_messages([])  # a wake without rows still goes: the worker then scans
    assert empty.actions == []
