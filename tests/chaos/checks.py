"""The chaos suite's checks: what the stored data and the subscribers' logs must show.

Every check collects violations (strings naming the invariant, the session and the steps)
instead of stopping at the first, so one run reports everything it found.

Definitions (also in the README's "Chaos testing" section):

1. Exactly once. A ``done`` action has exactly one step carrying its ``action_id`` (a pause
   of a paused session or a resume of a running one too: its step says "already ..."), except
   a ``destroy`` of a session already stopped, which has none. A ``failed`` action leaves no
   step. An action still pending or claimed after the drain is reported (never acknowledged).
2. Order. Per session, the seqs of the steps caused by actions increase in the order the
   (single) sender of that session enqueued them.
3. Seqs of every session are 1..n, no gap, no duplicate.
4. Single writer: along seq order, an ownership epoch never returns after another one wrote.
5. Replies: each ``agent`` message is recorded by exactly one step (``data.message_id``), no
   step records a message that does not exist, and a persona's reply numbers are 1..k.
6. Answered: a user message is *answered or deliberately skipped* by a persona of its
   conversation when the persona's read marker (``context.last_seen_version``) passes the
   message's commit version, and the first step that moves it past is a reply step or a tick
   whose notes say ``silent: <reason>``. Every persona still running at the end must have
   answered or skipped every user message of its conversation. Messages whose personas were
   all paused or destroyed are counted as skipped (not violations).
7. Subscribers: per room, the seqs received (snapshot and live, over every reconnection) are
   1, 2, 3, ... with no repeat and no gap; each matches the stored step (kind, action_id); and
   the last one reaches the session's stored seq measured before the subscribers stopped.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentd.store import Store
from agentd.store.actions import ActionRecord
from agentd.store.conversations import MessageRecord, read_messages_after_version
from agentd.store.sessions import SessionRecord
from agentd.store.steps import StepRecord


@dataclass
class Stored:
    steps: list[StepRecord]
    actions: list[ActionRecord]
    sessions: list[SessionRecord]
    # conversation_id -> [(commit version, message)] in commit order
    messages: dict[str, list[tuple[int, MessageRecord]]]
    bad_steps: int = 0


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, invariant: str, text: str) -> None:
        self.violations.append(f"[{invariant}] {text}")


def load_stored(uri: str, num_shards: int, conversations: list[str]) -> Stored:
    async def go() -> Stored:
        store = await Store.open(uri, num_shards, create=False)
        steps, bad = StepRecord.from_arrow_tolerant(await store.steps.query().to_arrow())
        actions = ActionRecord.from_arrow(await store.actions.query().to_arrow())
        sessions = SessionRecord.from_arrow(await store.sessions.query().to_arrow())
        messages = {cid: await read_messages_after_version(store.messages, cid, 0) for cid in conversations}
        return Stored(steps, actions, sessions, messages, len(bad))

    return asyncio.run(go())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line cut by a kill
    return out


def by_session(steps: list[StepRecord]) -> dict[str, list[StepRecord]]:
    grouped: dict[str, list[StepRecord]] = defaultdict(list)
    for step in steps:
        grouped[step.session_id].append(step)
    for items in grouped.values():
        items.sort(key=lambda s: (s.seq, s.ts))
    return grouped


# Failures that are never a real rejection of the action itself.
_NOT_A_REJECTION = re.compile(r"\bis (running|paused|starting|stopping)\b|^internal error")


def _status(step: StepRecord) -> str | None:
    return (step.state or {}).get("status")


def check_seqs(report: Report, grouped: dict[str, list[StepRecord]]) -> None:
    for sid, items in grouped.items():
        seqs = [s.seq for s in items]
        if seqs != list(range(1, len(seqs) + 1)):
            dups = sorted(k for k, n in Counter(seqs).items() if n > 1)
            missing = sorted(set(range(1, max(seqs) + 1)) - set(seqs))
            report.add("3 seqs", f"session {sid}: duplicates {dups[:10]} missing {missing[:10]} (n={len(seqs)})")


def check_single_writer(report: Report, grouped: dict[str, list[StepRecord]]) -> None:
    for sid, items in grouped.items():
        seen: list[int] = []
        for step in items:
            if not seen or seen[-1] != step.epoch:
                if step.epoch in seen:
                    report.add(
                        "4 single writer",
                        f"session {sid}: epoch {step.epoch} wrote seq {step.seq} "
                        f"after epoch(s) {seen[seen.index(step.epoch) + 1 :]}",
                    )
                seen.append(step.epoch)


def check_actions(
    report: Report, stored: Stored, grouped: dict[str, list[StepRecord]], sent: list[dict[str, Any]]
) -> None:
    rows: dict[str, list[ActionRecord]] = defaultdict(list)
    for action in stored.actions:
        rows[action.action_id].append(action)
    steps_by_action: dict[str, list[StepRecord]] = defaultdict(list)
    for step in stored.steps:
        if step.action_id:
            steps_by_action[step.action_id].append(step)
    counts: Counter[str] = Counter()
    for entry in sent:
        aid, sid, kind = entry["action_id"], entry["session_id"], entry["kind"]
        found = rows.get(aid, [])
        if len(found) != 1:
            report.add("1 exactly once", f"action {aid} ({kind} {sid}) has {len(found)} rows in the actions table")
            if not found:
                continue
        action = found[0]
        counts[f"{kind}:{action.status}"] += 1
        applied = steps_by_action.get(aid, [])
        where = f"action {aid} ({kind} #{entry['order']} of sender {entry['sender']}, session {sid})"
        if len(applied) > 1:
            report.add(
                "1 exactly once",
                f"{where} applied {len(applied)} times: seqs {[s.seq for s in applied]} "
                f"epochs {[s.epoch for s in applied]}",
            )
            continue
        if action.status == "failed":
            if applied:
                report.add("1 exactly once", f"{where} failed ({action.error}) but step {applied[0].seq} applied it")
            if _NOT_A_REJECTION.search(action.error or ""):
                # A live session, or a bug: a stop or a rebalance must hand actions back, not fail them.
                report.add(
                    "1 exactly once", f"{where} failed for good although nothing was wrong with it: {action.error}"
                )
            continue
        if action.status != "done":
            report.add(
                "1 exactly once",
                f"{where} never acknowledged: status {action.status}, attempts {action.attempts}, "
                f"claimed_by {action.claimed_by}",
            )
            continue
        if applied:
            continue
        result = action.result or {}
        noop = False
        if kind == "destroy":
            noop = result.get("status") in ("stopped", "error") and any(
                _status(s) in ("stopped", "error") for s in grouped.get(sid, [])
            )
        if not noop:
            report.add("1 exactly once", f"{where} is done (result {result}) but no step carries its action_id")
    report.stats["actions"] = dict(sorted(counts.items()))
    report.stats["actions_sent"] = len(sent)
    report.stats["actions_done"] = sum(n for k, n in counts.items() if k.endswith(":done"))
    report.stats["actions_failed"] = sum(n for k, n in counts.items() if k.endswith(":failed"))


def check_order(report: Report, stored: Stored, sent: list[dict[str, Any]]) -> None:
    first_step: dict[str, StepRecord] = {}
    for step in stored.steps:
        if step.action_id and step.action_id not in first_step:
            first_step[step.action_id] = step
    per_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in sent:
        per_session[entry["session_id"]].append(entry)
    for sid, entries in per_session.items():
        entries.sort(key=lambda e: (e["sender"], e["order"]))
        previous: tuple[int, dict[str, Any]] | None = None
        for entry in entries:
            step = first_step.get(entry["action_id"])
            if step is None:
                continue
            if previous is not None and step.seq <= previous[0]:
                before = previous[1]
                report.add(
                    "2 order",
                    f"session {sid}: {entry['kind']} #{entry['order']} ({entry['action_id']}, "
                    f"{entry['payload'].get('guidance', '')!r}) applied at seq {step.seq}, before "
                    f"{before['kind']} #{before['order']} ({before['action_id']}, "
                    f"{before['payload'].get('guidance', '')!r}) at seq {previous[0]}",
                )
            previous = (step.seq, entry)
        # The guidance recorded is the guidance sent.
        for entry in entries:
            step = first_step.get(entry["action_id"])
            if step is not None and entry["kind"] == "interrupt":
                raw = (step.guidance or {}).get("raw")
                if step.kind != "guidance" or raw != entry["payload"].get("guidance"):
                    report.add(
                        "2 order",
                        f"session {sid}: step {step.seq} of {entry['action_id']} is {step.kind} with guidance "
                        f"{raw!r}, sent {entry['payload'].get('guidance')!r}",
                    )


def check_replies(report: Report, stored: Stored, grouped: dict[str, list[StepRecord]]) -> None:
    agent_messages = {m.message_id: m for pairs in stored.messages.values() for _, m in pairs if m.role == "agent"}
    recorded: dict[str, list[StepRecord]] = defaultdict(list)
    for step in stored.steps:
        mid = (step.data or {}).get("message_id")
        if mid:
            recorded[mid].append(step)
    final = {sid: items[-1] for sid, items in grouped.items() if items}
    for mid, message in agent_messages.items():
        steps = recorded.get(mid, [])
        sid = (message.meta or {}).get("session_id")
        if len(steps) != 1:
            last = final.get(str(sid))
            report.add(
                "5 replies",
                f"reply {mid} of session {sid} in {message.conversation_id} is recorded by {len(steps)} steps "
                f"{[(s.session_id, s.seq) for s in steps]} (session's last step {last.seq if last else None}, "
                f"status {_status(last) if last else None})",
            )
    for mid, steps in recorded.items():
        if mid not in agent_messages:
            report.add("5 replies", f"steps {[(s.session_id, s.seq) for s in steps]} record missing message {mid}")
    for sid, items in grouped.items():
        numbers = [int((s.data or {})["reply"]) for s in items if (s.data or {}).get("message_id")]
        if numbers != list(range(1, len(numbers) + 1)):
            report.add("5 replies", f"session {sid}: reply numbers {numbers[:20]} are not 1..k")
    report.stats["agent_messages"] = len(agent_messages)


def _marker(step: StepRecord) -> int:
    context = (step.state or {}).get("context") or {}
    return int(context.get("last_seen_version") or 0)


def answered_problems(stored: Stored, grouped: dict[str, list[StepRecord]]) -> tuple[list[str], dict[str, int]]:
    """Invariant 6; also used to wait until the personas caught up at the end of a run."""
    problems: list[str] = []
    stats: Counter[str] = Counter()
    personas: dict[str, list[str]] = defaultdict(list)
    for record in stored.sessions:
        if record.agent_type == "persona":
            personas[str(record.config.get("conversation_id"))].append(record.session_id)
    for cid, pairs in stored.messages.items():
        users = [(v, m) for v, m in pairs if m.role == "user"]
        for version, message in users:
            stats["user_messages"] += 1
            live = 0
            handled = False
            for sid in personas.get(cid, []):
                items = grouped.get(sid, [])
                if not items:
                    continue
                running = _status(items[-1]) == "running"
                live += running
                crossing = next((s for s in items if _marker(s) >= version), None)
                if crossing is None:
                    if running:
                        problems.append(
                            f"user message {message.message_id} (version {version}) in {cid} not read by running "
                            f"persona {sid} (marker {_marker(items[-1])} at seq {items[-1].seq})"
                        )
                    continue
                replied = bool((crossing.data or {}).get("message_id"))
                silent = (crossing.notes or "").startswith("silent")
                if not (replied or silent):
                    problems.append(
                        f"persona {sid} passed user message {message.message_id} at seq {crossing.seq} "
                        f"({crossing.kind}, notes {crossing.notes!r}) without a reply or a reason"
                    )
                handled = True
                stats["replied" if replied else "skipped_with_reason"] += 1
            if not handled and not live:
                stats["skipped_no_live_persona"] += 1
    return problems, dict(stats)


def check_answered(report: Report, stored: Stored, grouped: dict[str, list[StepRecord]]) -> None:
    problems, stats = answered_problems(stored, grouped)
    for problem in problems:
        report.add("6 answered", problem)
    report.stats["user_messages"] = stats


def check_subscribers(
    report: Report,
    grouped: dict[str, list[StepRecord]],
    logs: dict[str, list[dict[str, Any]]],
    rooms: dict[str, list[str]],
    targets: dict[str, int],
) -> None:
    """``rooms``: each subscriber's rooms; ``targets``: each room's stored seq before they stopped."""
    seen_total = 0
    reconnects = 0
    index = {(s.session_id, s.seq): s for items in grouped.values() for s in items}
    for name, entries in logs.items():
        last: dict[str, int] = {}
        reconnects += max(0, sum(1 for e in entries if e["type"] == "connect") - 1)
        for entry in entries:
            if entry["type"] != "step":
                continue
            seen_total += 1
            room, seq, sid = entry["room"], entry["seq"], entry["session_id"]
            prev = last.get(room, 0)
            if seq == prev + 1:
                last[room] = seq
            elif seq <= prev:
                report.add("7 subscribers", f"{name} {room}: seq {seq} again after {prev} (conn {entry['conn']})")
            else:
                report.add(
                    "7 subscribers",
                    f"{name} {room}: gap, seq {seq} after {prev} (conn {entry['conn']}, {entry['via']})",
                )
                last[room] = seq
            stored = index.get((sid, seq))
            if stored is None:
                report.add("7 subscribers", f"{name} {room}: saw seq {seq} which is not stored")
            elif (stored.kind, stored.action_id) != (entry["kind"], entry["action_id"]):
                report.add(
                    "7 subscribers",
                    f"{name} {room}: seq {seq} seen as {entry['kind']}/{entry['action_id']}, "
                    f"stored {stored.kind}/{stored.action_id}",
                )
        for room in rooms.get(name, []):
            if last.get(room, 0) < targets.get(room, 0):
                report.add(
                    "7 subscribers", f"{name} {room}: stopped at seq {last.get(room, 0)}, stored {targets[room]}"
                )
    report.stats["subscriber_steps"] = seen_total
    report.stats["subscriber_reconnects"] = reconnects


def check_all(
    stored: Stored,
    sent: list[dict[str, Any]],
    subscriber_logs: dict[str, list[dict[str, Any]]],
    rooms: dict[str, list[str]],
    targets: dict[str, int],
) -> Report:
    report = Report()
    grouped = by_session(stored.steps)
    if stored.bad_steps:
        report.add("3 seqs", f"{stored.bad_steps} step rows cannot be read")
    check_seqs(report, grouped)
    check_single_writer(report, grouped)
    check_actions(report, stored, grouped, sent)
    check_order(report, stored, sent)
    check_replies(report, stored, grouped)
    check_answered(report, stored, grouped)
    check_subscribers(report, grouped, subscriber_logs, rooms, targets)
    report.stats["steps"] = len(stored.steps)
    report.stats["sessions"] = len(grouped)
    report.stats["steps_by_kind"] = dict(Counter(s.kind for s in stored.steps))
    return report
