// Talking to the API like any other client: a bearer header, JSON bodies, problem+json errors,
// and the chat's server-sent events read from a fetch body (EventSource can neither POST nor send
// an Authorization header).

/** A refusal or failure as the API described it (RFC 9457 problem document). */
export class Problem extends Error {
  constructor(status, doc, retryAfter) {
    super(doc.detail || doc.title || `HTTP ${status}`);
    this.status = status;
    this.code = doc.code || "http_" + status;
    this.title = doc.title || "";
    this.detail = doc.detail || "";
    /** Seconds to wait, from `Retry-After` (or the stream's `retryAfter`), or null. */
    this.retryAfter = Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : null;
  }
}

/** `Retry-After` in seconds: delta-seconds or an HTTP date. */
export function parseRetryAfter(value) {
  if (value === null || value === undefined || value === "") return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** Turns a non-2xx response into a Problem. */
export async function problemOf(resp) {
  let doc = {};
  try {
    doc = await resp.json();
  } catch {
    doc = {};
  }
  return new Problem(resp.status, doc, parseRetryAfter(resp.headers.get("Retry-After")));
}

/** A problem for a request that never got an answer (network down, server gone). */
export function networkProblem() {
  return new Problem(0, { code: "network", detail: "The server could not be reached." }, null);
}

function headers(token, extra) {
  const h = { Accept: "application/json", ...extra };
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

/** GET a JSON document. */
export async function getJson(path, token) {
  let resp;
  try {
    resp = await fetch(path, { headers: headers(token), cache: "no-store" });
  } catch {
    throw networkProblem();
  }
  if (!resp.ok) throw await problemOf(resp);
  return resp.json();
}

/** POST a JSON body; returns the Response (for callers that want a blob). */
export async function post(path, token, body, accept = "application/json") {
  let resp;
  try {
    resp = await fetch(path, {
      method: "POST",
      headers: headers(token, { "Content-Type": "application/json", Accept: accept }),
      body: JSON.stringify(body),
    });
  } catch {
    throw networkProblem();
  }
  if (!resp.ok) throw await problemOf(resp);
  return resp;
}

/**
 * Reads a server-sent event stream from a fetch body and calls `onEvent(name, data)` for each
 * event (data parsed as JSON when it is JSON). Resolves when the stream ends.
 */
export async function readEvents(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    // Events end with a blank line (LF, CRLF or CR line endings).
    buffer = buffer.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatch(block, onEvent);
    }
  }
  if (buffer.trim() !== "") dispatch(buffer, onEvent);
}

function dispatch(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return;
  const text = data.join("\n");
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  onEvent(name, parsed);
}
