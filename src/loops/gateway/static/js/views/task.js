// One task: prompt, success criteria, status history (from its events), steps,
// children and parent, artifacts, usage; cancel or re-queue with confirmation; approve
// or reject (with a reason) the human gates its run waits at.

import * as api from "../api.js";
import { clear, fill, confirmAction, fmtCost, fmtDuration, fmtTime, fmtTokens, h, statusBadge, taskDuration, toast } from "../dom.js";
import { conversation, diff } from "./render.js";

const ACTIVE = new Set(["queued", "leased", "running", "waiting_children", "waiting_approval"]);
const NAME_KEY = "loops.name";
const REQUEUEABLE = new Set(["failed", "blocked"]);
const INLINE_LIMIT = 2 * 1024 * 1024;

function historyItem(e) {
  const d = e.data || {};
  const answer = typeof d.approved === "boolean" ? `${d.approved ? "approved" : "rejected"} by ${d.by}` : null;
  const bits = [d.worker && `worker ${d.worker}`, d.attempt && `attempt ${d.attempt}`, d.path, answer, d.error, d.reason, d.name]
    .filter(Boolean).map(String);
  return h("li", { dataset: { id: String(e.id) } },
    h("time", { datetime: e.ts }, fmtTime(e.ts)), " ", h("strong", {}, e.type),
    bits.length ? ` — ${bits.join(" · ")}` : "");
}

async function artifactView(a) {
  const label = h("h3", {}, `${a.name} `, h("span", { class: "muted" }, `(${a.kind}, ${a.size} bytes)`));
  const body = h("div", {});
  const show = async () => {
    try {
      const text = await api.getText(`/artifacts/${a.id}/content`);
      fill(body, a.kind === "transcript" ? conversation(text) : a.kind === "diff" ? diff(text) : h("pre", {}, text));
    } catch (e) { fill(body, h("p", { class: "error" }, e.message)); }
  };
  if (["transcript", "diff", "final_message"].includes(a.kind) && a.size <= INLINE_LIMIT) await show();
  else body.append(h("button", { class: "secondary", onclick: show }, "Show content"));
  return h("section", { class: "artifact", dataset: { kind: a.kind } }, label, body);
}

function answerText(a) {
  const verb = a.approved ? "approved" : "rejected";
  return `${verb} by ${a.by}${a.at ? ` at ${fmtTime(a.at)}` : ""}${a.reason ? `: ${a.reason}` : ""}`;
}

/** One gate: its question, and its answer or the form that gives it. */
function gateItem(taskId, gate, onAnswered) {
  const item = h("li", { class: "gate", dataset: { path: gate.path } },
    h("strong", {}, gate.path), " — ", gate.question);
  if (gate.answer) { item.append(h("p", { class: "muted answer" }, answerText(gate.answer))); return item; }
  const name = h("input", { name: "by", value: sessionStorage.getItem(NAME_KEY) || "", placeholder: "your name", size: 14, "aria-label": "Your name" });
  const reason = h("input", { name: "reason", placeholder: "reason (required to reject)", size: 30, "aria-label": "Reason" });
  const send = async (approved) => {
    const why = reason.value.trim();
    if (!approved && !why) { toast("Say why you reject it"); reason.focus(); return; }
    const by = name.value.trim();
    if (by) sessionStorage.setItem(NAME_KEY, by);
    try {
      const task = await api.post(`/tasks/${taskId}/approvals`, { path: gate.path, approved, reason: why || null, by: by || "dashboard" });
      toast(`${approved ? "Approved" : "Rejected"} ${gate.path}`);
      onAnswered(task);
    } catch (e) { toast(e.message); }
  };
  item.append(h("div", { class: "actions" }, name, reason,
    h("button", { class: "approve", onclick: () => send(true) }, "Approve"),
    h("button", { class: "danger reject", onclick: () => send(false) }, "Reject")));
  return item;
}

export async function render(main, { match }, ctx) {
  const id = match[0];
  const [task, events, steps, children, artifacts] = await Promise.all([
    api.get(`/tasks/${id}`), api.get(`/tasks/${id}/events?limit=1000`), api.get(`/tasks/${id}/steps`),
    api.get(`/tasks/${id}/children`), api.get(`/artifacts?task_id=${id}&limit=100`),
  ]);
  const header = h("div", {});
  const drawHeader = (t) => {
    const actions = h("div", { class: "actions" });
    if (ACTIVE.has(t.status)) {
      actions.append(h("button", { class: "danger", id: "cancel", onclick: async () => {
        if (!(await confirmAction(`Cancel task #${t.id} and its active children?`, "Cancel task"))) return;
        try { drawHeader(await api.post(`/tasks/${t.id}/cancel`, { reason: "cancelled from the dashboard" })); toast(`Task #${t.id} cancelled`); }
        catch (e) { toast(e.message); }
      } }, "Cancel…"));
    }
    if (REQUEUEABLE.has(t.status)) {
      actions.append(h("button", { id: "requeue", onclick: async () => {
        if (!(await confirmAction(`Re-queue task #${t.id}? It starts over with fresh attempts.`, "Re-queue"))) return;
        try { drawHeader(await api.post(`/tasks/${t.id}/requeue`, { reason: "re-queued from the dashboard" })); toast(`Task #${t.id} re-queued`); }
        catch (e) { toast(e.message); }
      } }, "Re-queue…"));
    }
    const u = t.usage || {};
    fill(header, 
      h("h1", {}, `#${t.id} `, h("span", { class: "title-text" }, t.title || "(untitled)"), " ", statusBadge(t.status)),
      actions,
      h("div", { class: "grid" },
        h("dl", { class: "kv" },
          h("dt", {}, "Type"), h("dd", {}, t.type), h("dt", {}, "Priority"), h("dd", {}, String(t.priority)),
          h("dt", {}, "Attempts"), h("dd", {}, `${t.attempts} of ${t.max_attempts}`),
          h("dt", {}, "Provider"), h("dd", {}, [t.provider, t.model].filter(Boolean).join(" / ") || "–"),
          h("dt", {}, "Worker"), h("dd", {}, t.lease_owner || "–")),
        h("dl", { class: "kv" },
          h("dt", {}, "Created"), h("dd", {}, fmtTime(t.created_at)), h("dt", {}, "Finished"), h("dd", {}, fmtTime(t.finished_at)),
          h("dt", {}, "Duration"), h("dd", {}, fmtDuration(taskDuration(t))),
          h("dt", {}, "Parent"), h("dd", {}, t.parent_id ? h("a", { href: `#/tasks/${t.parent_id}` }, `#${t.parent_id}`) : "–"),
          h("dt", {}, "Responsibility"), h("dd", {}, t.responsibility || "–")),
        h("dl", { class: "kv", "aria-label": "Usage" },
          h("dt", {}, "Input tokens"), h("dd", {}, String(u.input_tokens ?? 0)),
          h("dt", {}, "Output tokens"), h("dd", {}, String(u.output_tokens ?? 0)),
          h("dt", {}, "Cached input"), h("dd", {}, String(u.cached_input_tokens ?? 0)),
          h("dt", {}, "Tokens"), h("dd", {}, fmtTokens(u)), h("dt", {}, "Cost"), h("dd", {}, fmtCost(u.cost_usd)))),
      h("h2", {}, "Prompt"), h("pre", { class: "prompt" }, t.prompt),
      t.success ? [h("h2", {}, "Success criteria"), h("pre", {}, t.success)] : null,
      t.check ? [h("h2", {}, "Check"), h("pre", {}, t.check)] : null,
      t.result ? [h("h2", {}, "Result"), h("pre", {}, t.result)] : null,
      t.error ? [h("h2", {}, "Error"), h("pre", { class: "error" }, t.error)] : null,
    );
  };
  drawHeader(task);

  const approvals = h("section", { id: "approvals", "aria-label": "Approvals" });
  const drawApprovals = async (t) => {
    if (t.type !== "loop" && t.status !== "waiting_approval") { clear(approvals); return; }
    const { gates } = await api.get(`/tasks/${t.id}/approvals`);
    if (!gates.length) { clear(approvals); return; }
    const answered = async (updated) => { drawHeader(updated); await drawApprovals(updated); };
    fill(approvals, h("h2", {}, "Approvals"),
      h("ul", { class: "plain" }, gates.map((g) => gateItem(t.id, g, answered))));
  };
  await drawApprovals(task);

  const history = h("ol", { class: "history", "aria-label": "Status history" }, events.events.map(historyItem));
  const stepList = steps.steps.length
    ? h("ul", { class: "plain" }, steps.steps.map((s) => h("li", {}, statusBadge(s.status), " ", s.name, s.note ? ` — ${s.note}` : "")))
    : h("p", { class: "muted" }, "No steps recorded.");
  const childList = children.children.length
    ? h("ul", { class: "plain" }, children.children.map((c) => h("li", {}, statusBadge(c.status), " ", h("a", { href: `#/tasks/${c.id}` }, `#${c.id} ${c.title || ""}`))))
    : h("p", { class: "muted" }, "No children.");
  const artifactSection = h("div", {});
  if (!artifacts.artifacts.length) artifactSection.append(h("p", { class: "muted" }, "No artifacts."));
  for (const a of artifacts.artifacts) artifactSection.append(await artifactView(a));

  main.append(header, approvals,
    h("h2", {}, "Status history"), history,
    h("h2", {}, "Steps"), stepList,
    h("h2", {}, "Children"), childList,
    h("h2", {}, "Artifacts"), artifactSection);

  let refresh = null;
  const unsubscribe = ctx.subscribe((event) => {
    if (String(event.task_id) !== String(id)) return;
    if (!history.querySelector(`li[data-id="${event.id}"]`)) history.append(historyItem(event));
    if (event.type.startsWith("task.") && !refresh) {
      refresh = setTimeout(async () => {
        refresh = null;
        try { const t = await api.get(`/tasks/${id}`); drawHeader(t); await drawApprovals(t); } catch { /* keep the old one */ }
      }, 200);
    }
  });
  return () => { unsubscribe(); clearTimeout(refresh); };
}
