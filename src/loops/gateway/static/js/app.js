// The dashboard's shell: the router (views chosen by the URL fragment), the one shared
// event stream every view listens to, and the token prompt.

import * as api from "./api.js";
import { clear, h } from "./dom.js";
import * as tasks from "./views/tasks.js";
import * as task from "./views/task.js";
import * as events from "./views/events.js";
import * as responsibilities from "./views/responsibilities.js";
import * as runs from "./views/runs.js";
import * as workers from "./views/workers.js";

const ROUTES = [
  [/^\/?$/, tasks, "tasks"],
  [/^\/tasks$/, tasks, "tasks"],
  [/^\/tasks\/(\d+)$/, task, "tasks"],
  [/^\/events$/, events, "events"],
  [/^\/responsibilities$/, responsibilities, "responsibilities"],
  [/^\/runs$/, runs, "runs"],
  [/^\/runs\/([\w.:-]+)$/, runs, "runs"],
  [/^\/workers$/, workers, "workers"],
];

const listeners = new Set();
let current = null; // { cleanup }

/** Subscribe to live events; returns the unsubscribe function. */
export function subscribe(fn) { listeners.add(fn); return () => listeners.delete(fn); }

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/tasks";
  const [path, query = ""] = raw.split("?");
  return { path, params: new URLSearchParams(query) };
}

async function route() {
  const { path, params } = parseHash();
  if (current && current.cleanup) current.cleanup();
  current = null;
  const main = document.getElementById("view");
  const found = ROUTES.find(([re]) => re.test(path));
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.toggleAttribute("aria-current", false);
    if (found && a.dataset.nav === found[2]) a.setAttribute("aria-current", "page");
  }
  clear(main);
  if (!found) {
    main.append(h("h1", {}, "Not found"), h("p", {}, "No view here. ", h("a", { href: "#/tasks" }, "Tasks")));
    return;
  }
  const [re, view] = found;
  const match = path.match(re).slice(1);
  const ctx = { subscribe, navigate: (to) => { location.hash = to; } };
  try {
    current = { cleanup: await view.render(main, { match, params }, ctx) };
  } catch (e) {
    main.append(h("p", { class: "error", role: "alert" }, `Could not load: ${e.message}`));
  }
}

function askToken(message) {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  error.textContent = message || "";
  error.hidden = !message;
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(input.value.trim()), { once: true });
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

let tokenPrompt = null;
api.onTokenNeeded((message) => {
  // several requests may fail at once: ask once
  if (!tokenPrompt) tokenPrompt = askToken(message).finally(() => { tokenPrompt = null; });
  return tokenPrompt;
});

function start() {
  const live = document.getElementById("live");
  api.followEvents({
    onEvent: (event) => { for (const fn of listeners) fn(event); },
    onState: (state) => { live.textContent = state === "live" ? "● live" : state; },
  });
  window.addEventListener("hashchange", route);
  route();
}

start();
