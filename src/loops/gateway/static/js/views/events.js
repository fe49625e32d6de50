// The live event stream: newest first, pause (events are kept while paused) and filter.

import * as api from "../api.js";
import { clear, fmtTime, h } from "../dom.js";

const KEEP = 500;

function item(e) {
  const data = e.data && Object.keys(e.data).length ? JSON.stringify(e.data) : "";
  return h("li", { dataset: { id: String(e.id), type: e.type } },
    h("span", { class: "num" }, `#${e.id}`),
    h("time", { class: "ts", datetime: e.ts }, fmtTime(e.ts).split(" ").pop()),
    h("strong", {}, e.type),
    h("span", { class: "task" }, e.task_id === null ? "" : h("a", { href: `#/tasks/${e.task_id}` }, `task ${e.task_id}`)),
    h("span", { class: "data" }, data.length > 400 ? `${data.slice(0, 399)}…` : data));
}

export async function render(main, _route, ctx) {
  const initial = (await api.get("/events?limit=200")).events;
  const list = h("ol", { class: "events-list", "aria-label": "Events, newest first", "aria-live": "off" });
  const filter = h("input", { id: "ev-filter", type: "search", placeholder: "type or task id, e.g. task.failed", size: 28 });
  let paused = false;
  let held = [];
  const pauseButton = h("button", { type: "button", id: "ev-pause", "aria-pressed": "false" }, "Pause");
  const note = h("span", { class: "muted", role: "status" });
  const matches = (e) => {
    const f = filter.value.trim().toLowerCase();
    if (!f) return true;
    return e.type.toLowerCase().includes(f) || String(e.task_id) === f;
  };
  const show = (e) => {
    const el = item(e);
    el.hidden = !matches(e);
    list.prepend(el);
    while (list.children.length > KEEP) list.lastElementChild.remove();
  };
  filter.addEventListener("input", () => {
    for (const li of list.children) {
      const e = { type: li.dataset.type, task_id: li.querySelector(".task a")?.textContent.replace("task ", "") ?? null };
      li.hidden = !matches(e);
    }
  });
  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", String(paused));
    if (!paused) { for (const e of held) show(e); held = []; }
    note.textContent = paused ? "paused" : "";
  });
  for (const e of initial) show(e);
  main.append(h("h1", {}, "Events"),
    h("div", { class: "filters" }, h("label", { for: "ev-filter" }, "Filter", filter), pauseButton, note),
    list);
  let seen = initial.length ? initial[initial.length - 1].id : 0;
  return ctx.subscribe((e) => {
    if (e.id <= seen) return;
    seen = e.id;
    if (paused) { held.push(e); note.textContent = `paused — ${held.length} new`; return; }
    show(e);
  });
}
