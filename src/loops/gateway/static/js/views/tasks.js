// Tasks: counts by status, a filterable, paginated table (newest first, paged on the
// server by id), rows updated in place as events arrive.

import * as api from "../api.js";
import { clear, fill, fmtAge, fmtCost, fmtDuration, fmtTokens, h, statusBadge, taskDuration } from "../dom.js";

const STATUSES = ["queued", "leased", "running", "waiting_children", "waiting_approval", "done", "failed", "blocked", "cancelled"];
const PAGE = 50;

function row(task) {
  const link = h("a", { href: `#/tasks/${task.id}` }, task.title || `(untitled #${task.id})`);
  return h("tr", { dataset: { id: String(task.id) } },
    h("td", { class: "num" }, String(task.id)),
    h("td", {}, statusBadge(task.status)),
    h("td", { class: "hide-narrow" }, task.type),
    h("td", { class: "title" }, link),
    h("td", { class: "num hide-narrow" }, String(task.priority)),
    h("td", { class: "num hide-narrow" }, `${task.attempts}/${task.max_attempts}`),
    h("td", { class: "num" }, fmtAge(task.created_at)),
    h("td", { class: "num hide-narrow" }, fmtDuration(taskDuration(task))),
    h("td", { class: "num hide-narrow" }, fmtTokens(task.usage)),
    h("td", { class: "num hide-narrow" }, fmtCost(task.usage && task.usage.cost_usd)),
  );
}

export async function render(main, { params }, ctx) {
  const status = params.get("status") || "";
  const type = params.get("type") || "";
  const before = params.get("before") || "";
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (status) query.set("status", status);
  if (type) query.set("type", type);
  if (before) query.set("before", before);
  const link = (over) => {
    const p = new URLSearchParams();
    const merged = { status, type, ...over };
    for (const [k, v] of Object.entries(merged)) if (v) p.set(k, v);
    const s = p.toString();
    return `#/tasks${s ? `?${s}` : ""}`;
  };

  const [summary, page] = await Promise.all([api.get("/status"), api.get(`/tasks?${query}`)]);
  const counts = h("ul", { class: "counts", "aria-label": "Tasks by status" });
  const drawCounts = (c) => {
    const total = Object.values(c).reduce((a, b) => a + b, 0);
    fill(counts, 
      h("li", {}, h("button", { "aria-pressed": String(!status), onclick: () => ctx.navigate(link({ status: "" })) },
        "all", h("span", { class: "n" }, String(total)))),
      ...STATUSES.map((s) => h("li", {}, h("button", {
        "aria-pressed": String(status === s), dataset: { status: s },
        onclick: () => ctx.navigate(link({ status: status === s ? "" : s })),
      }, statusBadge(s), h("span", { class: "n" }, String(c[s] || 0))))),
    );
  };
  drawCounts(summary.counts);

  const statusSelect = h("select", { id: "f-status", name: "status" },
    h("option", { value: "" }, "any"), ...STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)));
  const typeInput = h("input", { id: "f-type", name: "type", value: type, placeholder: "e.g. prompt", size: 14 });
  const filters = h("form", {
    class: "filters", role: "search",
    onsubmit: (e) => { e.preventDefault(); ctx.navigate(link({ status: statusSelect.value, type: typeInput.value.trim() })); },
  },
    h("label", { for: "f-status" }, "Status", statusSelect),
    h("label", { for: "f-type" }, "Type", typeInput),
    h("button", { type: "submit" }, "Filter"),
    (status || type) ? h("button", { type: "button", class: "secondary", onclick: () => ctx.navigate("#/tasks") }, "Clear") : null,
  );

  const tbody = h("tbody", {}, page.tasks.map(row));
  const table = h("div", { class: "table-wrap" }, h("table", { "aria-label": "Tasks" },
    h("thead", {}, h("tr", {},
      h("th", { class: "num", scope: "col" }, "#"), h("th", { scope: "col" }, "Status"),
      h("th", { class: "hide-narrow", scope: "col" }, "Type"), h("th", { scope: "col" }, "Title"),
      h("th", { class: "num hide-narrow", scope: "col" }, "Priority"),
      h("th", { class: "num hide-narrow", scope: "col" }, "Attempts"),
      h("th", { class: "num", scope: "col" }, "Age"),
      h("th", { class: "num hide-narrow", scope: "col" }, "Duration"),
      h("th", { class: "num hide-narrow", scope: "col" }, "Tokens"),
      h("th", { class: "num hide-narrow", scope: "col" }, "Cost"))),
    tbody));
  const empty = h("p", { class: "muted", hidden: page.tasks.length > 0 }, "No tasks match.");
  const last = page.tasks.length ? page.tasks[page.tasks.length - 1].id : null;
  const pager = h("nav", { class: "pager", "aria-label": "Pages" },
    before ? h("a", { href: link({}) }, "« Newest") : null,
    page.tasks.length === PAGE ? h("a", { href: link({ before: String(last) }), rel: "next" }, "Older »") : null,
    h("span", { class: "muted" }, page.tasks.length ? `#${page.tasks[0].id} – #${last}` : ""));

  main.append(h("h1", {}, "Tasks"), counts, filters, table, empty, pager);

  // live updates: refresh only the rows events name, and the counts (at most once a second)
  const pending = new Set();
  let countsDue = false;
  const timer = setInterval(async () => {
    if (countsDue) {
      countsDue = false;
      try { drawCounts((await api.get("/status")).counts); } catch { /* next time */ }
    }
    const ids = [...pending];
    pending.clear();
    for (const id of ids) {
      let fresh;
      try { fresh = await api.get(`/tasks/${id}`); } catch { continue; }
      const old = tbody.querySelector(`tr[data-id="${id}"]`);
      const matches = (!status || fresh.status === status) && (!type || fresh.type === type);
      const el = row(fresh);
      el.classList.add("fresh");
      if (old) { old.replaceWith(el); }
      else if (!before && matches) {
        // a new task: newest first, so it goes on top of the first page
        const next = [...tbody.children].find((tr) => Number(tr.dataset.id) < fresh.id);
        tbody.insertBefore(el, next || null);
        while (tbody.children.length > PAGE) tbody.lastElementChild.remove();
        empty.hidden = true;
      }
    }
  }, 500);
  const unsubscribe = ctx.subscribe((event) => {
    if (!event.type.startsWith("task.") || event.task_id === null) return;
    countsDue = true;
    if (tbody.querySelector(`tr[data-id="${event.task_id}"]`) || event.type === "task.created") pending.add(event.task_id);
  });
  return () => { unsubscribe(); clearInterval(timer); };
}
