// Rendering agent artifacts readably: a transcript as a conversation with tool calls
// folded, a diff with line and keyword colouring. Text only ever goes in as text.

import { h } from "../dom.js";

function pretty(value) {
  if (typeof value === "string") return value;
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

/** A JSONL transcript (run events or engine events) as a conversation. */
export function conversation(text) {
  const box = h("div", { class: "convo" });
  let message = null;
  const calls = new Map();
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let e;
    try { e = JSON.parse(line); } catch { box.append(h("pre", {}, line)); message = null; continue; }
    const type = String(e.type || "");
    if (type === "agent.text" || type === "text") {
      if (!message) { message = h("div", { class: "msg" }); box.append(message); }
      message.append(document.createTextNode(String(e.text ?? "")));
      continue;
    }
    message = null;
    if (type === "agent.tool_use" || type === "tool_use") {
      const name = e.tool || e.name || "tool";
      const details = h("details", {}, h("summary", {}, `tool call: ${name}`), h("pre", {}, pretty(e.input ?? {})));
      if (e.id) calls.set(e.id, details);
      box.append(details);
    } else if (type === "agent.tool_result" || type === "tool_result") {
      const out = h("pre", {}, String(e.output ?? ""));
      const call = e.id ? calls.get(e.id) : null;
      if (call) {
        call.append(h("div", { class: "muted" }, e.is_error ? "error:" : "result:"), out);
        if (e.is_error) call.classList.add("err");
      } else {
        box.append(h("details", { class: e.is_error ? "err" : "" }, h("summary", {}, e.is_error ? "tool error" : "tool result"), out));
      }
    } else if (type === "verdict") {
      box.append(h("p", { class: "note" }, `verdict (${e.slot || "gate"}): ${e.met ? "met" : "not met"}${e.reason ? ` — ${e.reason}` : ""}`));
    } else if (type === "agent.finished" || type === "result") {
      box.append(h("p", { class: "note" }, `turn finished${e.status ? ` (${e.status})` : ""}`));
    } else if (type.startsWith("agent.") || ["usage", "agent.usage"].includes(type)) {
      // usage and start markers: shown in the task's usage, not in the conversation
    } else {
      box.append(h("p", { class: "note" }, `${type}${e.summary ? `: ${e.summary}` : ""}`));
    }
  }
  if (!box.childElementCount) box.append(h("p", { class: "muted" }, "(empty transcript)"));
  return box;
}

const KEYWORDS = new Set(("def class return if elif else for while in import from as with try except finally " +
  "raise yield async await lambda not and or is None True False pass break continue function const let var " +
  "new this export default switch case throw typeof interface type fn pub impl struct enum match use mod").split(" "));
const TOKEN = /("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|#.*$|\/\/.*$|\b[A-Za-z_]\w*\b)/g;

function codeLine(text) {
  // split one line into spans: keywords, strings, comments (all as text nodes)
  const parts = [];
  let last = 0;
  for (const m of text.matchAll(TOKEN)) {
    const tok = m[0];
    let cls = null;
    if (tok.startsWith('"') || tok.startsWith("'")) cls = "str";
    else if (tok.startsWith("#") || tok.startsWith("//")) cls = "com";
    else if (KEYWORDS.has(tok)) cls = "kw";
    if (!cls) continue;
    if (m.index > last) parts.push(text.slice(last, m.index));
    parts.push(h("span", { class: cls }, tok));
    last = m.index + tok.length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

/** A unified diff with added/removed/hunk lines coloured and code keywords marked. */
export function diff(text) {
  const pre = h("pre", { class: "diff", tabindex: "0", "aria-label": "diff" });
  for (const line of text.replace(/\n$/, "").split("\n")) {
    let cls = "";
    if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("diff ") || line.startsWith("index ")) cls = "file";
    else if (line.startsWith("@@")) cls = "hunk";
    else if (line.startsWith("+")) cls = "add";
    else if (line.startsWith("-")) cls = "del";
    const body = cls === "file" || cls === "hunk" ? [line] : [line.slice(0, 1), ...codeLine(line.slice(1))];
    pre.append(h("span", { class: cls }, line === "" ? " " : body));
  }
  return pre;
}
