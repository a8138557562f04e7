// A gateway client that is not ours: Node's built-in WebSocket (undici). Usage:
//   node [--experimental-websocket] node_client.mjs <url> <room> <since> <expected steps>
// Prints one JSON line per received frame summary, then {"done":...} and exits 0; exit 1 on error.
const [url, room, since, expected] = process.argv.slice(2);
const want = Number(expected);
const ws = new WebSocket(url);
const seqs = [];
let snapshot = null;
const timer = setTimeout(() => { console.log(JSON.stringify({ error: "timeout", seqs })); process.exit(1); }, 30000);
ws.addEventListener("open", () => {
  ws.send(JSON.stringify({ op: "subscribe", room, since: Number(since) }));
  ws.send(JSON.stringify({ op: "ping", id: "node" }));
  ws.send("this is not json");
});
const others = [];
ws.addEventListener("message", (event) => {
  const frame = JSON.parse(event.data);
  if (frame.type === "snapshot") {
    snapshot = frame;
    for (const step of frame.steps) seqs.push(step.seq);
  } else if (frame.type === "step") {
    if (frame.room !== room) { console.log(JSON.stringify({ error: "wrong room", frame })); process.exit(1); }
    seqs.push(frame.seq);
  } else {
    others.push(frame);
  }
  if (seqs.length >= want && others.length >= 2) {
    clearTimeout(timer);
    console.log(JSON.stringify({ done: true, seqs, others, state: snapshot && snapshot.state }));
    ws.close(1000, "done");
  }
});
ws.addEventListener("close", (event) => {
  if (seqs.length < want) { console.log(JSON.stringify({ error: "closed", code: event.code, seqs })); process.exit(1); }
  process.exit(0);
});
ws.addEventListener("error", (event) => { console.log(JSON.stringify({ error: String(event.message || event) })); });
