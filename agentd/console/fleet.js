// Fleet: every session, filtered and paged by the gateway (/api/sessions), refreshed every 2 s;
// select sessions and pause, resume or destroy them after a confirmation.

import { el, clear, age, badge, getJSON, confirmDialog, toast } from "./util.js";
import { describeAck } from "./net.js";

const PAGE = 50;
const REFRESH_MS = 2000;

export function fleetView(main, app) {
  const state = { agent: "", type: "", status: "", offset: 0, selected: new Set(), data: null };
  const agentInput = el("input", { type: "search", placeholder: "agent id contains…", "aria-label": "filter by agent" });
  const typeSelect = el("select", { "aria-label": "filter by type" }, el("option", { value: "", text: "all types" }));
  const statusSelect = el("select", { "aria-label": "filter by status" }, el("option", { value: "", text: "all statuses" }));
  const counts = el("div", { class: "chips", id: "status-counts" });
  const body = el("tbody");
  const pager = el("div", { class: "pager" });
  const selectAll = el("input", { type: "checkbox", "aria-label": "select all on this page" });
  const bulk = el("div", { class: "bulk", hidden: true });
  const result = el("div", { class: "bulk-result" });

  let timer = null;
  let debounce = null;
  agentInput.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { state.agent = agentInput.value.trim(); state.offset = 0; load(); }, 250);
  });
  typeSelect.addEventListener("change", () => { state.type = typeSelect.value; state.offset = 0; load(); });
  statusSelect.addEventListener("change", () => { state.status = statusSelect.value; state.offset = 0; load(); });
  selectAll.addEventListener("change", () => {
    for (const item of state.data?.items || []) {
      if (selectAll.checked) state.selected.add(item.session_id); else state.selected.delete(item.session_id);
    }
    draw();
  });

  const controls = app.me.control;
  for (const kind of ["pause", "resume", "destroy"]) {
    bulk.append(el("button", {
      class: kind === "destroy" ? "danger small" : "small",
      "data-bulk": kind,
      disabled: !controls,
      text: kind[0].toUpperCase() + kind.slice(1),
      onclick: () => runBulk(kind),
    }));
  }
  bulk.append(el("button", { class: "ghost small", text: "Clear selection", onclick: () => { state.selected.clear(); draw(); } }));

  main.append(
    el("section", { class: "view fleet" },
      el("div", { class: "view-head" }, el("h1", { text: "Fleet" }), counts),
      el("div", { class: "filters card" }, agentInput, typeSelect, statusSelect),
      el("div", { class: "bulkbar" }, bulk, result),
      el("div", { class: "card table-card" },
        el("table", { class: "table sessions" },
          el("thead", {}, el("tr", {},
            el("th", { class: "check" }, selectAll),
            el("th", { text: "session" }),
            el("th", { class: "opt2", text: "agent" }),
            el("th", { class: "opt", text: "type" }),
            el("th", { text: "status" }),
            el("th", { class: "num opt2", text: "iteration" }),
            el("th", { class: "num", text: "last step" }),
            el("th", { class: "num opt", text: "late" }))),
          body)),
      pager));

  async function load() {
    const params = new URLSearchParams({ offset: state.offset, limit: PAGE });
    if (state.agent) params.set("agent", state.agent);
    if (state.type) params.set("type", state.type);
    if (state.status) params.set("status", state.status);
    try {
      state.data = await getJSON(`/api/sessions?${params}`);
    } catch (error) {
      clear(body).append(el("tr", {}, el("td", { colspan: 8, class: "error", text: `Could not list sessions: ${error.message}` })));
      return;
    }
    draw();
  }

  function draw() {
    const data = state.data;
    if (!data) return;
    if (typeSelect.options.length !== data.types.length + 1) {
      for (const t of data.types) typeSelect.append(el("option", { value: t, text: t }));
    }
    if (statusSelect.options.length === 1) {
      for (const s of data.statuses) statusSelect.append(el("option", { value: s, text: s }));
    }
    clear(counts);
    const total = Object.values(data.counts).reduce((a, b) => a + b, 0);
    counts.append(chip("all", total, ""));
    for (const [status, n] of Object.entries(data.counts)) if (n) counts.append(chip(status, n, status));

    clear(body);
    if (!data.items.length) {
      body.append(el("tr", {}, el("td", { colspan: 8, class: "muted center", text: "No sessions match." })));
    }
    for (const s of data.items) {
      const box = el("input", { type: "checkbox", "aria-label": `select ${s.session_id}`, checked: state.selected.has(s.session_id) });
      box.addEventListener("change", () => {
        if (box.checked) state.selected.add(s.session_id); else state.selected.delete(s.session_id);
        drawBulk();
      });
      const late = s.late_s === null ? "–" : age(s.late_s);
      body.append(el("tr", { "data-session": s.session_id },
        el("td", { class: "check" }, box),
        el("td", { class: "mono" },
          el("a", { href: `/ui/session/${encodeURIComponent(s.session_id)}`, "data-link": true, text: s.session_id }),
          el("span", { class: "sub", text: `${s.agent_id} · ${s.agent_type} · #${s.iteration}` })),
        el("td", { class: "mono opt2", text: s.agent_id }),
        el("td", { class: "opt", text: s.agent_type }),
        el("td", {}, badge(s.status)),
        el("td", { class: "num opt2", text: s.iteration }),
        el("td", { class: "num", text: age(s.age_s) }),
        el("td", { class: `num opt ${s.late_s > 1 ? "warn" : ""}`, text: late })));
    }
    selectAll.checked = data.items.length > 0 && data.items.every((s) => state.selected.has(s.session_id));
    const last = Math.min(data.offset + data.items.length, data.total);
    clear(pager).append(
      el("button", { class: "ghost small", text: "‹ Prev", disabled: data.offset === 0, onclick: () => { state.offset = Math.max(0, data.offset - PAGE); load(); } }),
      el("span", { class: "muted", text: data.total ? `${data.offset + 1}–${last} of ${data.total.toLocaleString()}` : "0 sessions" }),
      el("button", { class: "ghost small", text: "Next ›", disabled: last >= data.total, onclick: () => { state.offset += PAGE; load(); } }));
    drawBulk();
  }

  function chip(label, n, status) {
    const active = state.status === status;
    return el("button", {
      class: `chip ${status ? `s-${status}` : ""} ${active ? "active" : ""}`,
      onclick: () => { state.status = status; statusSelect.value = status; state.offset = 0; load(); },
    }, el("b", { text: n.toLocaleString() }), ` ${label}`);
  }

  function drawBulk() {
    bulk.hidden = state.selected.size === 0;
    const label = bulk.querySelector(".count") || el("span", { class: "count" });
    label.textContent = `${state.selected.size} selected`;
    bulk.prepend(label);
  }

  async function runBulk(kind) {
    const ids = [...state.selected];
    const ok = await confirmDialog(`${kind[0].toUpperCase() + kind.slice(1)} ${ids.length} session${ids.length > 1 ? "s" : ""}?`,
      kind === "destroy" ? "Destroyed sessions stop for good; their history stays." : ids.slice(0, 8).join(", ") + (ids.length > 8 ? ", …" : ""),
      kind[0].toUpperCase() + kind.slice(1), kind === "destroy");
    if (!ok) return;
    result.textContent = `${kind}: sending ${ids.length}…`;
    const answers = await Promise.all(ids.map((id) => app.gw.action(kind, id, kind === "destroy" ? { reason: "console" } : {})));
    const failed = answers.filter((a) => !describeAck(a).ok);
    result.textContent = `${kind}: ${answers.length - failed.length} acknowledged` + (failed.length ? `, ${failed.length} failed` : "");
    result.className = `bulk-result ${failed.length ? "error" : "ok"}`;
    for (const a of failed.slice(0, 3)) toast(`${a.session_id}: ${describeAck(a).text}`, "error");
    state.selected.clear();
    load();
  }

  load();
  timer = setInterval(load, REFRESH_MS);
  return () => clearInterval(timer);
}
