// Building the page from data, safely: every piece of task or agent text is set with
// textContent (via text nodes), never parsed as HTML.

/** h("a", {href: "#/x", class: "y"}, "text", child) -> element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "style") el.style.cssText = value; // CSSOM: allowed by the page's CSP
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "href" && !/^(#|\/)/.test(String(value))) continue; // no javascript: links
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) { el.replaceChildren(); return el; }

/** Replace the children of el (arrays are flattened, strings become text). */
export function fill(el, ...children) { return append(clear(el), children); }

export function statusBadge(status) {
  return h("span", { class: `status s-${status}` }, String(status ?? "?").replace("_", " "));
}

export function fmtTokens(usage) {
  if (!usage) return "";
  const n = (usage.input_tokens || 0) + (usage.output_tokens || 0);
  if (!n) return "–";
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : String(n);
}

export function fmtCost(usd) {
  if (usd === null || usd === undefined) return "–";
  return usd < 0.01 && usd > 0 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function secondsSince(iso, now = Date.now()) {
  return iso ? (now - Date.parse(iso)) / 1000 : null;
}

export function fmtAge(iso) { return iso ? fmtDuration(secondsSince(iso)) : "–"; }

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { hour12: false });
}

/** A task's duration: created to finished, or to now while it is unfinished. */
export function taskDuration(task) {
  const end = task.finished_at ? Date.parse(task.finished_at) : Date.now();
  return (end - Date.parse(task.created_at)) / 1000;
}

let toastTimer = null;
export function toast(message) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}

/** Ask for confirmation in a modal dialog; resolves true when confirmed. */
export function confirmAction(text, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}
