// Daemon: the supervisor's status over the control socket (workers, heartbeats, CPU and RSS,
// maintenance) and this gateway's own health (connections, tail lag), refreshed every 2 s.

import { el, clear, age, bytes, getJSON } from "./util.js";

const REFRESH_MS = 2000;

function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v ?? "–" })]));
}

function ms(summary) {
  if (!summary || typeof summary !== "object") return "–";
  const p50 = summary.p50 ?? summary.p50_ms;
  const p99 = summary.p99 ?? summary.p99_ms;
  if (p50 === undefined) return "–";
  return `${Number(p50).toFixed(1)} / ${Number(p99).toFixed(1)} ms`;
}

export function daemonView(main) {
  const top = el("div", { class: "card" });
  const workers = el("tbody");
  const gateway = el("div", { class: "card" });
  const maintenance = el("div", { class: "card" });
  const problem = el("p", { class: "error", hidden: true });
  main.append(el("section", { class: "view daemon" },
    el("div", { class: "view-head" }, el("h1", { text: "Daemon" })),
    problem,
    top,
    el("div", { class: "card table-card" }, el("h2", { text: "Processes" }),
      el("table", { class: "table workers" },
        el("thead", {}, el("tr", {},
          el("th", { text: "process" }), el("th", { class: "num opt", text: "pid" }), el("th", { text: "state" }),
          el("th", { class: "num", text: "heartbeat" }), el("th", { class: "num", text: "sessions" }),
          el("th", { class: "num", text: "CPU" }), el("th", { class: "num", text: "RSS" }),
          el("th", { class: "num opt", text: "lateness p50 / p99" }), el("th", { class: "num opt", text: "restarts" }))),
        workers)),
    el("div", { class: "grid2" }, gateway, maintenance)));

  async function load() {
    let data;
    try {
      data = await getJSON("/api/daemon");
    } catch (error) {
      problem.hidden = false;
      problem.textContent = `Could not read the daemon's status: ${error.message}`;
      return;
    }
    const sup = data.supervisor;
    problem.hidden = !data.error;
    problem.textContent = data.error ? `Supervisor: ${data.error}` : "";
    const problems = (sup && sup.problems) || [];
    clear(top).append(el("h2", { text: "Supervisor" }), sup ? kv([
      ["pid", sup.pid], ["uptime", age(sup.uptime)], ["ready", sup.ready ? "yes" : "no"],
      ["healthy", sup.healthy === undefined ? "–" : sup.healthy ? "yes" : "no"],
      ["metrics", sup.metrics || "off"],
      ["workers", sup.workers], ["sessions", sup.sessions], ["shards", sup.num_shards],
      ["database", sup.database], ["config", sup.config_digest],
    ]) : el("p", { class: "muted", text: "not reachable from the gateway" }),
    ...(problems.length ? [el("ul", { class: "problems error" }, problems.map((p) => el("li", { text: p })))] : []));
    clear(workers);
    for (const c of sup ? sup.children : []) {
      const state = !c.alive ? "dead" : c.ready ? "ready" : "starting";
      const hb = c.last_heartbeat_ago;
      workers.append(el("tr", { "data-role": c.role },
        el("td", { class: "mono", text: c.index === null ? c.role : `${c.role}-${c.index}` }),
        el("td", { class: "num mono opt", text: c.pid }),
        el("td", {}, el("span", { class: `badge s-${state === "ready" ? "running" : state === "dead" ? "error" : "starting"}`, text: state })),
        el("td", { class: `num ${hb > 3 ? "warn" : ""}`, text: hb === null || hb === undefined ? "–" : age(hb) }),
        el("td", { class: "num", text: c.sessions ?? "–" }),
        el("td", { class: "num", text: c.cpu_percent === null || c.cpu_percent === undefined ? "–" : `${c.cpu_percent.toFixed(0)} %` }),
        el("td", { class: "num", text: bytes(c.rss_bytes) }),
        el("td", { class: "num opt", text: ms(c.lateness_ms) }),
        el("td", { class: "num opt", text: c.restarts ?? "–" })));
    }
    const gw = data.gateway;
    const steps = gw.tail.steps;
    const messages = gw.tail.messages;
    clear(gateway).append(el("h2", { text: "Gateway" }), kv([
      ["status", gw.status], ["uptime", age(gw.uptime_s)], ["connections", gw.connections],
      ["subscriptions", gw.subscriptions], ["rooms", gw.rooms],
      ["steps lag", `${steps.lag_versions} versions · last batch ${age(steps.last_batch_age_s)} old`],
      ["steps read cost", steps.last_read_ms === null ? "–" : `${steps.last_read_ms} ms`],
      ["messages lag", `${messages.lag_versions} versions · last batch ${age(messages.last_batch_age_s)} old`],
      ["events sent", `${gw.delivered.steps} steps · ${gw.delivered.messages} messages`],
      ["overflow disconnects", gw.delivered.overflow_disconnects],
    ]));
    const m = sup && sup.maintenance;
    clear(maintenance).append(el("h2", { text: "Maintenance" }), m && typeof m === "object"
      ? kv(Object.entries(m).slice(0, 12).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]))
      : el("p", { class: "muted", text: "no maintenance pass yet" }));
  }

  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => clearInterval(timer);
}
