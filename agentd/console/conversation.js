// Conversations: the list, and one conversation with its messages streaming live, its
// participants and a box to post as a user.

import { el, clear, getJSON, clock, toast } from "./util.js";

export function conversationsView(main) {
  const list = el("ul", { class: "list" });
  main.append(el("section", { class: "view" }, el("div", { class: "view-head" }, el("h1", { text: "Conversations" })), el("div", { class: "card" }, list)));
  getJSON("/api/conversations").then((data) => {
    if (!data.items.length) list.append(el("li", { class: "muted", text: "No conversations yet (agentctl conversation create)." }));
    for (const c of data.items) {
      list.append(el("li", {},
        el("a", { href: `/ui/conversation/${encodeURIComponent(c.conversation_id)}`, "data-link": true, class: "mono", text: c.conversation_id }),
        c.title ? el("span", { text: ` · ${c.title}` }) : null,
        el("span", { class: "muted small", text: ` · ${new Date(c.created_at).toLocaleString()}` })));
    }
  }).catch((error) => list.append(el("li", { class: "error", text: error.message })));
  return null;
}

export function conversationView(main, app, conversationId) {
  const people = el("ul", { class: "people", id: "participants" });
  const title = el("h1", { text: "Conversation" });
  const messages = el("ol", { class: "messages", id: "messages" });
  const author = el("input", { id: "author", type: "text", value: "user", "aria-label": "post as", size: 10 });
  const text = el("textarea", { id: "message", rows: 2, placeholder: "Say something…", "aria-label": "message" });
  const status = el("p", { class: "ack", role: "status" });
  const form = el("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); post(); } },
    el("div", { class: "row" }, el("label", { for: "author", text: "as" }), author),
    text,
    el("button", { type: "submit", class: "primary", disabled: !app.me.control, text: "Post" }));
  text.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); post(); } });

  main.append(el("section", { class: "view conversation" },
    el("p", { class: "crumbs" }, el("a", { href: "/ui/conversations", "data-link": true, text: "Conversations" }), " / conversation"),
    el("div", { class: "view-head" }, title, el("span", { class: "mono muted small", text: conversationId })),
    el("div", { class: "grid2 narrow-side" },
      el("div", { class: "card col" }, el("h2", { text: "Messages" }), messages, form, status),
      el("div", { class: "card" }, el("h2", { text: "Participants" }), people))));

  const names = new Map(); // agent id -> persona name, from the participants

  const empty = el("li", { class: "muted empty", text: "No messages yet: say something below." });
  messages.append(empty);

  function addMessage(m) {
    empty.remove();
    const name = names.get(m.author_id);
    const who = name ? `${name}` : m.author_id;
    const row = el("li", { class: `msg r-${m.role}`, "data-seq": m.seq },
      el("div", { class: "who" }, el("b", { text: who }), el("span", { class: "muted small", text: ` ${name ? `${m.author_id} · ` : ""}${m.role} · ${clock(m.created_at)}` })),
      el("div", { class: "body", text: m.text }));
    messages.append(row);
    messages.scrollTop = messages.scrollHeight;
  }

  function showPeople(list) {
    clear(people);
    if (!list.length) people.append(el("li", { class: "muted", text: "nobody yet" }));
    for (const p of list) {
      const name = (p.persona_config && p.persona_config.name) || p.agent_id || "?";
      if (p.agent_id) names.set(p.agent_id, name);
      const tone = p.persona_config && p.persona_config.tone ? ` · ${p.persona_config.tone}` : "";
      people.append(el("li", {}, el("b", { text: name }), el("span", { class: "muted small", text: tone }),
        p.session_id ? el("div", {}, el("a", { href: `/ui/session/${encodeURIComponent(p.session_id)}`, "data-link": true, class: "mono small", text: p.session_id })) : null));
    }
  }

  const unsubscribe = app.gw.subscribe(`conv::${conversationId}`, 0, (frame) => {
    if (frame.type === "snapshot") {
      if (frame.state && frame.state.conversation === null) status.textContent = "This conversation does not exist (yet).";
      if (frame.state && frame.state.conversation && frame.state.conversation.title) title.textContent = frame.state.conversation.title;
      if (frame.state) showPeople(frame.state.participants || []);
      for (const m of frame.messages || []) addMessage(m);
    } else if (frame.type === "message") {
      addMessage(frame);
    } else if (frame.type === "error") {
      status.className = "ack error";
      status.textContent = frame.error;
    }
  });

  async function post() {
    const body = text.value.trim();
    if (!body) return;
    const answer = await app.gw.post(conversationId, body, author.value.trim() || "user");
    if (answer.type === "posted" && answer.status === "done") {
      text.value = "";
      status.className = "ack ok";
      status.textContent = `posted ${answer.message_id}`;
    } else {
      status.className = "ack error";
      status.textContent = `not posted: ${answer.error}`;
      toast(`Not posted: ${answer.error}`, "error");
    }
  }

  return unsubscribe;
}
