// Loop runs from the run registry: the list, and one run's tree of loops and dag nodes
// with state, verdicts and reasons, tokens and cost against its budgets.

import * as api from "../api.js";
import { clear, fill, fmtAge, fmtCost, fmtTime, h, statusBadge } from "../dom.js";

function list(runs) {
  if (!runs.length) return h("p", { class: "muted" }, "No runs registered (loop run … registers them).");
  return h("div", { class: "table-wrap" }, h("table", { "aria-label": "Runs" },
    h("thead", {}, h("tr", {}, ...["Run", "State", "Title", "Iteration", "Started", "Tokens", "Cost", "Reason"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, runs.map((r) => h("tr", {},
      h("td", {}, h("a", { href: `#/runs/${r.run_id}` }, r.run_id)), h("td", {}, statusBadge(r.state)),
      h("td", { class: "title" }, r.title), h("td", { class: "num" }, r.iteration === null ? "–" : `${r.iteration}/${r.max ?? "∞"}`),
      h("td", {}, `${fmtAge(r.started_at)} ago`), h("td", { class: "num" }, String(r.tokens)),
      h("td", { class: "num" }, fmtCost(r.cost_usd)), h("td", { class: "title" }, r.reason))))));
}

function budgets(items) {
  if (!items.length) return h("p", { class: "muted" }, "No budget set.");
  return h("ul", { class: "plain" }, items.map((b) => h("li", {},
    h("strong", {}, b.scope || "run"), b.exceeded ? h("span", { class: "error" }, ` exceeded: ${b.exceeded}`) : null,
    Object.entries(b.limits || {}).filter(([, v]) => v !== null).map(([k, limit]) => {
      const spent = Number((b.spent || {})[k] || 0);
      const share = limit ? Math.min(1, spent / limit) : 0;
      return h("div", { class: "node" }, `${k}: ${spent} of ${limit}`,
        h("div", { class: `bar${spent > limit ? " over" : ""}`, role: "meter", "aria-valuemin": "0", "aria-valuemax": String(limit), "aria-valuenow": String(spent), "aria-label": k },
          h("div", { style: `width: ${(share * 100).toFixed(1)}%` })));
    }))));
}

function tree(nodes) {
  if (!nodes.length) return h("p", { class: "muted" }, "No nodes yet.");
  return h("ul", { class: "tree", "aria-label": "Loops and dag nodes" }, nodes.map((n) => {
    const depth = (n.path.match(/\//g) || []).length;
    const v = n.verdict;
    return h("li", { style: `padding-left: ${depth * 1.4}em` }, h("div", { class: "node" },
      h("strong", {}, n.name || n.path), h("span", { class: "muted" }, n.kind), statusBadge(n.state),
      n.iteration !== null && n.iteration !== undefined ? h("span", {}, `iteration ${n.iteration}/${n.max ?? "∞"}`) : null,
      n.tokens ? h("span", { class: "muted" }, `${n.tokens} tokens · ${fmtCost(n.cost_usd)}`) : null),
      v ? h("div", { class: v.met ? "s-done" : "s-failed" }, `${v.slot || "gate"}: ${v.met ? "met" : "not met"}${v.confidence !== null && v.confidence !== undefined ? ` (${v.confidence})` : ""}${v.reason ? ` — ${v.reason}` : ""}`) : null,
      n.summary ? h("div", { class: "muted" }, n.summary) : null);
  }));
}

export async function render(main, { match }) {
  if (!match[0]) {
    const { runs } = await api.get("/runs");
    main.append(h("h1", {}, "Runs"), list(runs));
    const timer = setInterval(async () => {
      try { main.querySelector(".table-wrap, p.muted")?.replaceWith(list((await api.get("/runs")).runs)); } catch { /* next time */ }
    }, 5000);
    return () => clearInterval(timer);
  }
  const body = h("div", {});
  const draw = async () => {
    const run = await api.get(`/runs/${encodeURIComponent(match[0])}`);
    fill(body, 
      h("h1", {}, `Run ${run.run_id} `, statusBadge(run.state)),
      h("dl", { class: "kv" }, h("dt", {}, "Title"), h("dd", {}, run.title), h("dt", {}, "Started"), h("dd", {}, fmtTime(run.started_at)),
        h("dt", {}, "Tokens"), h("dd", {}, String(run.tokens)), h("dt", {}, "Cost"), h("dd", {}, fmtCost(run.cost_usd)),
        h("dt", {}, "Reason"), h("dd", {}, run.reason || "–"), h("dt", {}, "Directory"), h("dd", {}, run.cwd || "–")),
      h("h2", {}, "Budgets"), budgets(run.budgets || []),
      h("h2", {}, "Tree"), tree(run.nodes || []));
    return run;
  };
  const run = await draw();
  main.append(h("p", {}, h("a", { href: "#/runs" }, "« All runs")), body);
  if (run.state !== "running") return null;
  const timer = setInterval(() => draw().then((r) => { if (r.state !== "running") clearInterval(timer); }).catch(() => {}), 2000);
  return () => clearInterval(timer);
}
