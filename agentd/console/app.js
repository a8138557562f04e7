// The console's entry point: login, the live connection, and a small path router.
// Views live in their own modules; each returns a cleanup function called on navigation.

import { Gateway } from "./net.js";
import { getJSON, HttpError, el, clear } from "./util.js";
import { fleetView } from "./fleet.js";
import { sessionView } from "./session.js";
import { conversationsView, conversationView } from "./conversation.js";
import { daemonView } from "./daemon.js";

const main = document.getElementById("main");
let cleanup = null;
let app = null; // { gw, me }

function route() {
  const path = location.pathname.replace(/\/+$/, "") || "/";
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "ui") parts.shift();
  const [view, id] = parts;
  if (view === "session" && id) return ["fleet", () => sessionView(main, app, id)];
  if (view === "conversation" && id) return ["conversations", () => conversationView(main, app, id)];
  if (view === "conversations") return ["conversations", () => conversationsView(main, app)];
  if (view === "daemon") return ["daemon", () => daemonView(main, app)];
  return ["fleet", () => fleetView(main, app)];
}

function render() {
  if (cleanup) cleanup();
  cleanup = null;
  clear(main);
  const [section, show] = route();
  for (const link of document.querySelectorAll(".nav a")) {
    link.classList.toggle("active", link.dataset.view === section);
  }
  cleanup = show() || null;
}

export function navigate(href) {
  history.pushState(null, "", href);
  render();
  window.scrollTo(0, 0);
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-link]");
  if (!link || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
window.addEventListener("popstate", render);

function setConnState(state) {
  const node = document.getElementById("conn");
  node.dataset.state = state;
  node.querySelector("span").textContent = state;
}

function showLogin(message) {
  const section = document.getElementById("login");
  section.hidden = false;
  const error = document.getElementById("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  document.getElementById("token").focus();
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = document.getElementById("token").value;
  // The token travels once, in a header of a POST: never in a URL.
  const response = await fetch("/login", {
    method: "POST",
    credentials: "same-origin",
    headers: { Authorization: `Bearer ${token}` },
  });
  if (response.ok) {
    document.getElementById("token").value = "";
    document.getElementById("login").hidden = true;
    start();
  } else {
    showLogin(response.status === 401 ? "Wrong token." : `Login failed (${response.status}).`);
  }
});

document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/logout", { method: "POST", credentials: "same-origin" });
  location.reload();
});

async function start() {
  let me;
  try {
    me = await getJSON("/api/me");
  } catch (error) {
    if (error instanceof HttpError && error.status === 401) return showLogin("");
    clear(main).append(el("p", { class: "error", text: `The gateway did not answer: ${error.message}` }));
    return;
  }
  document.getElementById("readonly").hidden = me.control;
  document.getElementById("logout").hidden = !me.token_required;
  if (!app) app = { gw: new Gateway(setConnState), me };
  else app.me = me;
  render();
}

start();
