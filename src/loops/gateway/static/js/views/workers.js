// Workers: who holds leases, since when, last heartbeat (refreshed as leases change).

import * as api from "../api.js";
import { clear, fill, fmtAge, fmtTime, h, statusBadge } from "../dom.js";

export async function render(main, _route, ctx) {
  const body = h("div", {});
  const draw = async () => {
    const { workers } = await api.get("/workers");
    fill(body, workers.length
      ? workers.map((w) => h("section", { class: "worker" },
        h("h2", {}, w.name, " ", h("span", { class: "muted" }, `last heartbeat ${fmtAge(w.last_heartbeat)} ago`)),
        h("div", { class: "table-wrap" }, h("table", { "aria-label": `Leases of ${w.name}` },
          h("thead", {}, h("tr", {}, ...["Task", "Status", "Attempt", "Since", "Last heartbeat", "Expires"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, w.leases.map((l) => h("tr", {},
            h("td", { class: "title" }, h("a", { href: `#/tasks/${l.task_id}` }, `#${l.task_id} ${l.title || ""}`)),
            h("td", {}, statusBadge(l.status)), h("td", { class: "num" }, String(l.attempt)),
            h("td", {}, `${fmtTime(l.since)} (${fmtAge(l.since)})`),
            h("td", {}, `${fmtAge(l.last_heartbeat)} ago`), h("td", {}, fmtTime(l.expires_at)))))))))
      : h("p", { class: "muted" }, "No worker holds a lease right now."));
  };
  await draw();
  main.append(h("h1", {}, "Workers"), body);
  let due = null;
  const unsubscribe = ctx.subscribe((e) => {
    if (!e.type.startsWith("task.") || due) return;
    due = setTimeout(() => { due = null; draw().catch(() => {}); }, 500);
  });
  const timer = setInterval(() => draw().catch(() => {}), 10000); // heartbeats store no event
  return () => { unsubscribe(); clearTimeout(due); clearInterval(timer); };
}
