// Recurring responsibilities: schedule, last and next dispatch; a tick button.

import * as api from "../api.js";
import { clear, fill, fmtTime, h, toast } from "../dom.js";

export async function render(main, _route, ctx) {
  const body = h("div", {});
  const draw = async () => {
    const { responsibilities } = await api.get("/responsibilities");
    fill(body, responsibilities.length
      ? h("div", { class: "table-wrap" }, h("table", { "aria-label": "Responsibilities" },
        h("thead", {}, h("tr", {}, ...["Name", "Schedule", "Enabled", "Last dispatch", "Last task", "Next due"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, responsibilities.map((r) => h("tr", {},
          h("td", {}, r.name), h("td", {}, r.schedule), h("td", {}, r.enabled ? "yes" : "no"),
          h("td", {}, fmtTime(r.last_dispatched_at)),
          h("td", {}, r.last_task_id ? h("a", { href: `#/tasks/${r.last_task_id}` }, `#${r.last_task_id}`) : "–"),
          h("td", {}, fmtTime(r.next_due_at)))))))
      : h("p", { class: "muted" }, "No responsibilities (define them in loops.toml as [[responsibilities]])."));
  };
  const tick = h("button", { id: "tick", onclick: async () => {
    tick.disabled = true;
    try {
      const report = await api.post("/tick");
      const names = report.dispatched.map((d) => d.responsibility).join(", ");
      toast(`Tick: ${report.reclaimed} reclaimed, ${report.dispatched.length} dispatched${names ? ` (${names})` : ""}`);
      await draw();
    } catch (e) { toast(e.message); } finally { tick.disabled = false; }
  } }, "Tick now");
  await draw();
  main.append(h("h1", {}, "Responsibilities"),
    h("p", { class: "muted" }, "A tick reclaims expired leases and dispatches the responsibilities that are due."),
    h("div", { class: "actions" }, tick), body);
  return ctx.subscribe((e) => { if (e.type === "responsibility.dispatched") draw().catch(() => {}); });
}
