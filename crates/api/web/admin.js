// The fleet console: GET /api/system-health with the admin token at least once a second (the
// next request starts when the previous one answered, and no later than a second after the last
// one started), and the admin actions, each behind a confirmation. Server text is shown as text.

import { Session } from "/assets/session.js";
import { Problem, getJson, post } from "/assets/api.js";
import { formatSeconds, sentence } from "/assets/refusal.js";

const session = new Session("fleetgate.admin-token");
const PERIOD_MS = 1000;
const $ = (id) => document.getElementById(id);
let polling = false;

const ACTIONS = {
  "reset-queue": "Reset the queue? Every request waiting for a slot, on every replica, is answered with 503 and must be sent again.",
  "reset-errors": "Reset the error and rate-limit counters of this replica and every breaker's error window?",
  "force-close-circuits": "Force every circuit breaker closed? Calls to a still-failing upstream resume on every replica at once.",
  "cleanup-sessions": "Delete conversations and usage rows older than 30 days?",
  "emergency-cleanup": "End the database sessions that have been idle in a transaction for more than 5 minutes?",
};

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value === null || value === undefined ? "—" : String(value);
  if (cls) el.className = cls;
  return el;
}

function row(cells, attrs = {}) {
  const tr = document.createElement("tr");
  Object.assign(tr.dataset, attrs);
  for (const c of cells) tr.append(c instanceof Node ? c : text("td", c));
  return tr;
}

function stateCell(state) {
  const td = document.createElement("td");
  td.append(text("span", state, `badge state-${String(state).replace(/[^a-z_]/g, "")}`));
  return td;
}

function renderReplicas(c) {
  const body = $("replicas").querySelector("tbody");
  body.replaceChildren();
  const fleet = c.fleet;
  const note = $("fleet-note");
  if (!fleet) {
    note.textContent = `Redis cannot be read: only the replica that answered is known. Its admission mode: ${c.admission.mode}.`;
    body.append(
      row(["(this replica)", "—", stateCell(c.admission.mode), c.admission.localSlotsInUse, c.admission.localWaiters, "now"], {
        mode: c.admission.mode,
      }),
    );
    return;
  }
  note.textContent =
    `${fleet.liveReplicas} live replica(s)` +
    (fleet.truncated ? `, the first ${fleet.replicas.length} listed` : "") +
    `; this report came from ${fleet.answeredBy}.`;
  for (const r of fleet.replicas) {
    const name = document.createElement("td");
    name.append(text("code", r.replica));
    if (r.replica === fleet.answeredBy) name.append(text("span", " (answered)", "help"));
    if (r.draining) name.append(text("span", " draining", "badge state-draining"));
    const seen = Math.max(0, fleet.recordTtlMs - r.expiresInMs);
    body.append(
      row([name, r.listen, stateCell(r.mode), r.slotsHeld, r.localWaiters, `${(seen / 1000).toFixed(1)} s ago`], {
        replica: r.replica,
        listen: r.listen,
        mode: r.mode,
      }),
    );
  }
}

function renderSlots(c) {
  const q = c.queue;
  const cap = q ? q.globalCap : null;
  $("slots-in-use").textContent = q ? String(q.slotsInUse) : "unknown (Redis unreadable)";
  $("slots-cap").textContent = cap === null ? "?" : String(cap);
  const meter = $("slots-meter");
  meter.max = Math.max(1, cap || 1);
  meter.value = q ? Math.min(q.slotsInUse, meter.max) : 0;
  const fleet = c.fleet;
  $("user-cap").textContent = fleet ? String(fleet.userCap) : q ? String(q.userCap) : "?";
  const list = $("users-at-cap");
  list.replaceChildren();
  const atCap = fleet ? fleet.usersAtCap : [];
  $("users-at-cap-count").textContent = fleet ? String(atCap.length) : "unknown";
  for (const u of atCap) {
    const li = document.createElement("li");
    li.append(text("code", u.user), text("span", ` holds ${u.slots} slot(s)`));
    list.append(li);
  }
}

function renderQueue(c) {
  const body = $("queue").querySelector("tbody");
  body.replaceChildren();
  if (!c.queue) {
    body.append(row(["unknown (Redis unreadable)", "—"]));
    return;
  }
  // Classes are whatever the report lists, highest priority first as the server orders them.
  const waiting = c.queue.waiting;
  const entries = Array.isArray(waiting)
    ? waiting.map((w) => [w.class || w.name, w.waiting ?? w.count])
    : Object.entries(waiting);
  for (const [cls, n] of entries) body.append(row([cls, n], { class: cls }));
}

function renderStores(c) {
  const pg = c.postgres;
  $("postgres").textContent =
    pg.status === "up"
      ? `up, ${pg.latencyMs} ms; pool ${pg.poolInUse} in use of ${pg.poolMax}`
      : "DOWN: chat answers 503 and no quota is spent";
  $("postgres").dataset.status = pg.status;
  const r = c.redis;
  $("redis").textContent =
    r.status === "up" ? `up, ${r.latencyMs} ms; ${r.mode} limits; ${r.topology}` : `DOWN: ${r.mode} mode (local limits)`;
  $("redis").dataset.status = r.status;
}

function renderBreakers(c) {
  const body = $("breakers").querySelector("tbody");
  body.replaceChildren();
  if (!c.breakers.wired) {
    body.append(row(["no breakers on this replica", "—", "—", "—"]));
    return;
  }
  for (const b of c.breakers.states) {
    let until = "—";
    if (b.openUntilMs) {
      const left = (b.openUntilMs - Date.now()) / 1000;
      until = `${new Date(b.openUntilMs).toLocaleTimeString()} (${left > 0 ? "in " + formatSeconds(left) : "due"})`;
    }
    body.append(
      row([b.service, stateCell(b.state), `${b.failures} / ${b.calls}`, until], {
        service: b.service,
        state: b.state,
      }),
    );
  }
}

function render(report) {
  const status = $("status");
  status.textContent = report.status;
  status.className = `badge status-${report.status}`;
  $("score").textContent = String(report.score);
  const c = report.components;
  renderReplicas(c);
  renderSlots(c);
  renderQueue(c);
  renderStores(c);
  renderBreakers(c);
  const recs = $("recommendations");
  recs.replaceChildren();
  for (const r of report.recommendations || []) recs.append(text("li", r));
  if ((report.recommendations || []).length === 0) recs.append(text("li", "Nothing to do.", "help"));
  $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  $("updated").dataset.at = String(Date.now());
}

function pollFailed(problem) {
  if (problem.code === "unauthorized" || problem.code === "forbidden" || problem.status === 200) {
    stop("The admin token was refused: sign in again.");
    return;
  }
  const box = $("poll-error");
  box.hidden = false;
  box.textContent = `The last report failed: ${sentence(problem)} Retrying…`;
}

async function pollLoop() {
  while (polling) {
    const started = Date.now();
    try {
      const report = await getJson("/api/system-health", session.token);
      if (!polling) return;
      if (!report.components) {
        // A public report: the token was not recognised as the admin token.
        pollFailed(new Problem(200, { code: "forbidden" }, null));
        return;
      }
      $("poll-error").hidden = true;
      render(report);
    } catch (e) {
      pollFailed(e instanceof Problem ? e : new Problem(0, { code: "network" }, null));
    }
    const wait = Math.max(0, PERIOD_MS - (Date.now() - started));
    await new Promise((r) => window.setTimeout(r, wait));
  }
}

function start() {
  $("signin").hidden = true;
  $("console").hidden = false;
  if (!polling) {
    polling = true;
    pollLoop();
  }
}

function stop(message) {
  polling = false;
  session.clear();
  $("console").hidden = true;
  $("signin").hidden = false;
  const err = $("signin-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("token-input").focus();
}

function confirmAction(action) {
  const dialog = $("confirm");
  $("confirm-title").textContent = `Confirm: ${action}`;
  $("confirm-text").textContent = ACTIONS[action];
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
  });
}

async function runAction(action) {
  if (!(await confirmAction(action))) return;
  const out = $("action-result");
  out.replaceChildren(text("p", `Running ${action}…`));
  out.dataset.action = action;
  // A run number, so a watcher can tell this run's outcome from the previous one's.
  out.dataset.run = String(Number(out.dataset.run || 0) + 1);
  delete out.dataset.ok;
  try {
    const resp = await post("/api/system-health", session.token, { action });
    const result = await resp.json();
    out.replaceChildren(
      text("p", `${action}: done at ${new Date().toLocaleTimeString()}`),
      text("pre", JSON.stringify(result.result, null, 2)),
    );
    out.dataset.ok = "true";
  } catch (e) {
    const p = e instanceof Problem ? e : new Problem(0, { code: "network" }, null);
    out.replaceChildren(text("p", `${action} failed: ${sentence(p)}`));
    out.dataset.ok = "false";
  }
}

function main() {
  session.adoptFragment();
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    session.set(value);
    $("token-input").value = "";
    $("signin-error").hidden = true;
    start();
  });
  $("signout").addEventListener("click", () => stop(null));
  for (const b of document.querySelectorAll("button.action")) {
    b.addEventListener("click", () => runAction(b.dataset.action));
  }
  if (session.token) start();
  else stop(null);
}

main();
