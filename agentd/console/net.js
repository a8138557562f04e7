// One WebSocket to the gateway for the whole page: subscriptions that resume exactly after a
// reconnect (each room remembers the last seq it received and resubscribes with since=it),
// and request/answer ops (action, post) matched by id.

const BACKOFF = [250, 500, 1000, 2000, 4000];

export class Gateway {
  constructor(onState) {
    this.onState = onState;
    this.rooms = new Map(); // room -> {since, handler}
    this.waiting = new Map(); // op id -> resolve
    this.nextId = 1;
    this.attempt = 0;
    this.ws = null;
    this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    this.ws = ws;
    this.onState("connecting");
    ws.onopen = () => {
      this.attempt = 0;
      this.onState("live");
      for (const [room, sub] of this.rooms) this.sendSubscribe(room, sub);
    };
    ws.onmessage = (event) => this.dispatch(JSON.parse(event.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.onState("reconnecting");
      for (const [id, resolve] of this.waiting) {
        resolve({ type: "error", code: "unavailable", error: "connection lost before the answer; check the session" });
        this.waiting.delete(id);
      }
      const delay = BACKOFF[Math.min(this.attempt++, BACKOFF.length - 1)];
      setTimeout(() => this.connect(), delay);
    };
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  sendSubscribe(room, sub) {
    this.send({ op: "subscribe", room, since: sub.since });
  }

  // handler(frame) gets snapshot, step, message and error frames of the room.
  subscribe(room, since, handler) {
    const sub = { since, handler };
    this.rooms.set(room, sub);
    this.sendSubscribe(room, sub);
    return () => {
      if (this.rooms.get(room) === sub) {
        this.rooms.delete(room);
        this.send({ op: "unsubscribe", room });
      }
    };
  }

  dispatch(frame) {
    if ((frame.type === "ack" || frame.type === "posted") && this.waiting.has(frame.id)) {
      this.waiting.get(frame.id)(frame);
      this.waiting.delete(frame.id);
      return;
    }
    if (frame.type === "error" && (frame.op === "post" || frame.op === "action") && this.waiting.size) {
      // Errors of ops carry no id; the oldest op of that kind waiting gets it.
      const [id, resolve] = this.waiting.entries().next().value;
      this.waiting.delete(id);
      resolve(frame);
      return;
    }
    const sub = frame.room ? this.rooms.get(frame.room) : null;
    if (!sub) return;
    if (frame.type === "snapshot") {
      for (const item of frame.steps || frame.messages || []) sub.since = Math.max(sub.since, item.seq);
    } else if (frame.type === "step" || frame.type === "message") {
      if (frame.seq <= sub.since) return; // already shown (a resubscription replays nothing, but be safe)
      sub.since = frame.seq;
    }
    sub.handler(frame);
  }

  request(frame) {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      if (!this.send({ ...frame, id })) {
        this.waiting.delete(id);
        resolve({ type: "error", code: "unavailable", error: "not connected to the gateway; retry in a moment" });
      }
    });
  }

  action(kind, sessionId, payload = {}) {
    return this.request({ op: "action", kind, session_id: sessionId, payload });
  }

  post(conversationId, text, author) {
    return this.request({ op: "post", conversation_id: conversationId, text, author });
  }
}

export function describeAck(ack) {
  if (ack.type === "ack" && ack.status === "done") {
    const at = ack.seq !== null && ack.seq !== undefined ? ` at seq ${ack.seq}` : "";
    return { ok: true, text: `${ack.kind} acknowledged${at}` };
  }
  if (ack.type === "ack" && ack.status === "pending") return { ok: false, text: `${ack.kind}: ${ack.error}` };
  const what = ack.kind || ack.op || "request";
  return { ok: false, text: `${what} ${ack.code === "forbidden" ? "not allowed" : "rejected"}: ${ack.error}` };
}
