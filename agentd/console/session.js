// Session: its steps streaming live (a subscription with since, resumed exactly after a
// reconnect by net.js), its context, its pending actions, and the controls.

import { el, clear, badge, getJSON, clock, pretty, toast, confirmDialog } from "./util.js";
import { describeAck } from "./net.js";

const HISTORY = 200; // steps loaded on open; older ones stay in storage
const MAX_ROWS = 500;
const PENDING_MS = 2000;

export function sessionView(main, app, sessionId) {
  const title = el("h1", { class: "mono", text: sessionId });
  const meta = el("div", { class: "meta" });
  const context = el("pre", { class: "context", id: "context" });
  const pending = el("ul", { class: "pending", id: "pending" });
  const steps = el("ol", { class: "steps", id: "steps" });
  const ackLine = el("p", { class: "ack", id: "ack", role: "status" });
  const guidance = el("input", { id: "guidance", type: "text", placeholder: 'about cats, or {"subject": "cats"}', "aria-label": "guidance" });
  const now = el("input", { id: "guide-now", type: "checkbox" });
  const controls = app.me.control;
  let unsubscribe = null;
  let session = null;

  const button = (label, kind, cls = "") => el("button", { class: cls, "data-action": kind, disabled: !controls, text: label, onclick: () => act(kind) });
  const guideForm = el("form", { class: "guide", onsubmit: (e) => { e.preventDefault(); guide(); } },
    guidance,
    el("label", { class: "inline" }, now, " tick now"),
    el("button", { type: "submit", class: "primary", disabled: !controls, text: "Guide" }));

  main.append(el("section", { class: "view session" },
    el("p", { class: "crumbs" }, el("a", { href: "/ui/fleet", "data-link": true, text: "Fleet" }), " / session"),
    el("div", { class: "view-head" }, title, meta),
    el("div", { class: "grid2" },
      el("div", { class: "col" },
        el("div", { class: "card" },
          el("h2", { text: "Controls" }),
          el("div", { class: "row" }, button("Pause", "pause"), button("Resume", "resume"), button("Destroy", "destroy", "danger")),
          guideForm,
          ackLine),
        el("div", { class: "card" }, el("h2", { text: "Context" }), context),
        el("div", { class: "card" }, el("h2", { text: "Pending actions" }), pending)),
      el("div", { class: "card col steps-card" },
        el("h2", {}, "Steps ", el("span", { class: "muted small", id: "step-count" })),
        steps))));

  function showMeta(s) {
    const over = s.status === "stopped" || s.status === "stopping";
    for (const b of main.querySelectorAll("button[data-action], form.guide button")) b.disabled = !controls || over;
    clear(meta).append(badge(s.status), el("span", { class: "muted", text: ` agent ` }), el("b", { class: "mono", text: s.agent_id }),
      el("span", { class: "muted", text: ` · type ` }), el("b", { text: s.agent_type }),
      el("span", { class: "muted", text: ` · iteration ` }), el("b", { id: "iteration", text: s.iteration }));
  }

  function showContext(ctx) {
    context.textContent = pretty(ctx || {});
  }

  function addStep(step) {
    let text = step.text || step.error || step.notes || "";
    if (step.guidance) text = `${text || "guidance"} ${JSON.stringify(step.guidance)}`;
    const row = el("li", { class: `step st-${step.status} k-${step.kind || "tick"}`, "data-seq": step.seq },
      el("span", { class: "seq mono", text: `#${step.seq}` }),
      el("span", { class: "kind", text: step.kind || "tick" }),
      el("span", { class: "time mono", text: clock(step.ts) }),
      el("span", { class: "text", text }));
    steps.prepend(row);
    while (steps.children.length > MAX_ROWS) steps.lastChild.remove();
    document.getElementById("step-count").textContent = `latest #${step.seq}`;
    if (step.state && step.state.context) showContext(step.state.context);
    if (session) {
      if (step.state && step.state.iteration !== undefined) session.iteration = step.state.iteration;
      if (step.kind === "lifecycle" && step.state && step.state.status) session.status = step.state.status;
      showMeta(session);
    }
  }

  function onFrame(frame) {
    if (frame.type === "snapshot") {
      if (frame.state) { session = frame.state; showMeta(session); showContext(session.context); }
      for (const step of frame.steps || []) addStep(step);
    } else if (frame.type === "step") {
      addStep(frame);
    } else if (frame.type === "error") {
      ackLine.className = "ack error";
      ackLine.textContent = frame.error;
    }
  }

  async function loadPending() {
    try {
      const data = await getJSON(`/api/sessions/${encodeURIComponent(sessionId)}`);
      if (!unsubscribe) {
        session = data.session;
        showMeta(session);
        showContext(session.context);
        const since = Math.max(0, (session.last_seq || 0) - HISTORY);
        unsubscribe = app.gw.subscribe(`run::${session.agent_id}::${sessionId}`, since, onFrame);
      } else if (data.session.status !== session.status) {
        session.status = data.session.status;
        showMeta(session);
      }
      clear(pending);
      if (!data.pending.length) pending.append(el("li", { class: "muted", text: "none" }));
      for (const a of data.pending) {
        pending.append(el("li", {}, el("b", { text: a.kind }), ` ${a.status} · `, el("span", { class: "mono small", text: a.action_id })));
      }
    } catch (error) {
      if (!unsubscribe) clear(meta).append(el("span", { class: "error", text: error.message }));
    }
  }

  function report(answer) {
    const { ok, text } = describeAck(answer);
    ackLine.className = `ack ${ok ? "ok" : "error"}`;
    ackLine.dataset.seq = answer.seq ?? "";
    ackLine.textContent = text + (answer.action_id ? ` · ${answer.action_id}` : "");
    loadPending();
  }

  async function act(kind) {
    if (kind === "destroy" && !(await confirmDialog("Destroy this session?", `${sessionId} stops for good; its history stays.`, "Destroy"))) return;
    ackLine.className = "ack";
    ackLine.textContent = `${kind}: waiting for the acknowledgement…`;
    report(await app.gw.action(kind, sessionId, kind === "destroy" ? { reason: "console" } : {}));
  }

  async function guide() {
    const raw = guidance.value.trim();
    if (!raw) return;
    let value = raw;
    if (raw.startsWith("{")) {
      try { value = JSON.parse(raw); } catch (error) { toast(`Not valid JSON: ${error.message}`, "error"); return; }
    }
    ackLine.className = "ack";
    ackLine.textContent = "guidance: waiting for the acknowledgement…";
    const answer = await app.gw.action("interrupt", sessionId, { guidance: value, now: now.checked });
    report(answer);
    if (answer.status === "done") guidance.value = "";
  }

  loadPending();
  const timer = setInterval(loadPending, PENDING_MS);
  return () => { clearInterval(timer); if (unsubscribe) unsubscribe(); };
}
