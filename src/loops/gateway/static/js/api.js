// Talking to the gateway: JSON over fetch with the bearer token, and the event stream
// read with fetch (EventSource cannot send an Authorization header; the token never
// goes into a URL).

const TOKEN_KEY = "loops.token";
let askToken = null; // set by the app: () => Promise<string>

export function onTokenNeeded(fn) { askToken = fn; }
export function token() { return sessionStorage.getItem(TOKEN_KEY); }
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error) return new ApiError(response.status, body.error.code, body.error.message);
  } catch { /* not JSON */ }
  return new ApiError(response.status, "http_error", `${response.status} ${response.statusText}`);
}

/** Fetch with the token; on 401 ask for a (new) token and try again. */
async function send(path, init = {}) {
  for (;;) {
    const response = await fetch(path, { ...init, headers: headers(init.headers) });
    if (response.status === 401 && askToken) {
      const err = await errorOf(response);
      setToken(await askToken(token() ? err.message : ""));
      continue;
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }
}

export async function get(path) { return (await send(path)).json(); }
export async function getText(path) { return (await send(path, { headers: { Accept: "*/*" } })).text(); }
export async function post(path, body = {}) {
  const response = await send(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.status === 204 ? null : response.json();
}

/**
 * Follow GET /events/stream: calls onEvent(event) for each event, onState(text) when
 * connected or not, reconnects after `after` the last id seen. Returns a stop function.
 */
export function followEvents({ after = null, onEvent, onState = () => {} }) {
  let stopped = false;
  let last = after;
  let controller = null;
  async function once() {
    controller = new AbortController();
    const query = last === null ? "" : `?after=${encodeURIComponent(last)}`;
    const response = await send(`/events/stream${query}`, {
      headers: { Accept: "text/event-stream" }, signal: controller.signal,
    });
    onState("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = [];
        let id = null;
        for (const line of block.split("\n")) {
          if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          else if (line.startsWith("id:")) id = line.slice(3).trim();
        }
        if (id !== null) last = Number(id);
        if (data.length) {
          try { onEvent(JSON.parse(data.join("\n"))); } catch (e) { console.error(e); }
        }
      }
    }
  }
  (async () => {
    let delay = 500;
    while (!stopped) {
      try { await once(); delay = 500; } catch (e) {
        if (stopped) break;
        onState(e instanceof ApiError ? `stream: ${e.message}` : "reconnecting…");
      }
      if (stopped) break;
      onState("reconnecting…");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => { stopped = true; if (controller) controller.abort(); };
}
