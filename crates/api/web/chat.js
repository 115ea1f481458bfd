// The chat page: sign-in, a question streamed from POST /api/chat (queue position, answer text,
// numbered citations), queries left today, this session's history, exports and refusals.
// Server text is only ever put in the page as text (textContent), never parsed as HTML.

import { Session, tokenSubject } from "/assets/session.js";
import { Problem, post, readEvents } from "/assets/api.js";
import { sentence, showRefusal } from "/assets/refusal.js";

const session = new Session("fleetgate.token");
const HISTORY = "fleetgate.chat.history";
const CONVERSATION = "fleetgate.chat.conversation";
const EXTENSIONS = { bibtex: "bib", ris: "ris", markdown: "md", json: "json" };

const $ = (id) => document.getElementById(id);
let stopCountdown = () => {};
let busy = false;
let waiting = false;

function loadHistory() {
  try {
    const h = JSON.parse(window.sessionStorage.getItem(HISTORY) || "[]");
    return Array.isArray(h) ? h : [];
  } catch {
    return [];
  }
}

function saveHistory(entries) {
  window.sessionStorage.setItem(HISTORY, JSON.stringify(entries));
}

function conversationId() {
  return window.sessionStorage.getItem(CONVERSATION);
}

/** A link only to the web: a citation's URL is data from upstreams, never a script URL. */
function citationUrl(c) {
  if (typeof c.url === "string" && /^https?:\/\//i.test(c.url)) return c.url;
  const id = encodeURIComponent(String(c.id || ""));
  if (!id) return null;
  if (c.source === "pubmed") return `https://pubmed.ncbi.nlm.nih.gov/${id}/`;
  if (c.source === "semantic_scholar") return `https://www.semanticscholar.org/paper/${id}`;
  return null;
}

const SOURCE_NAMES = { pubmed: "PubMed", semantic_scholar: "Semantic Scholar" };

function renderCitations(list, citations) {
  list.replaceChildren();
  list.hidden = citations.length === 0;
  for (const c of citations) {
    const li = document.createElement("li");
    const url = citationUrl(c);
    const title = c.title || c.id || "untitled";
    let name;
    if (url) {
      name = document.createElement("a");
      name.href = url;
      name.target = "_blank";
      name.rel = "noopener noreferrer";
    } else {
      name = document.createElement("span");
    }
    name.textContent = title;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = ` — ${SOURCE_NAMES[c.source] || c.source || "source"}${c.year ? ", " + c.year : ""}`;
    li.append(name, meta);
    list.append(li);
  }
}

/** One question and its answer in the history list. */
function turnElement(question) {
  const li = document.createElement("li");
  li.className = "turn";
  const q = document.createElement("p");
  q.className = "question";
  q.textContent = question;
  const a = document.createElement("div");
  a.className = "answer";
  const cites = document.createElement("ol");
  cites.className = "citations";
  cites.setAttribute("aria-label", "Citations");
  cites.hidden = true;
  li.append(q, a, cites);
  return { li, answer: a, citations: cites };
}

function separatorElement() {
  const li = document.createElement("li");
  li.className = "separator";
  li.textContent = "New conversation";
  return li;
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren();
  for (const entry of loadHistory()) {
    if (entry.separator) {
      list.append(separatorElement());
      continue;
    }
    const t = turnElement(entry.question);
    t.answer.textContent = entry.answer;
    renderCitations(t.citations, entry.citations || []);
    list.append(t.li);
  }
  updateExports();
}

function updateExports() {
  const exportable = conversationId() !== null;
  for (const b of document.querySelectorAll("button.export")) b.disabled = !exportable;
}

function setQuota(n) {
  $("quota-value").textContent = String(n);
}

function setProgress(text, attrs = {}) {
  const p = $("progress");
  p.hidden = text === null;
  p.textContent = text || "";
  delete p.dataset.position;
  Object.assign(p.dataset, attrs);
}

function updateAsk() {
  $("ask").disabled = busy || waiting;
}

function refuse(problem) {
  stopCountdown();
  if (problem.code === "unauthorized") {
    session.clear();
    showSignIn(sentence(problem));
    return;
  }
  if (problem.code === "daily_quota_exhausted") setQuota(0);
  waiting = problem.retryAfter !== null;
  updateAsk();
  stopCountdown = showRefusal($("refusal"), problem, () => {
    waiting = false;
    updateAsk();
  });
}

function clearRefusal() {
  stopCountdown();
  $("refusal").hidden = true;
  $("refusal").replaceChildren();
  waiting = false;
}

async function ask(question, useRag) {
  clearRefusal();
  busy = true;
  updateAsk();
  const turn = turnElement(question);
  turn.answer.setAttribute("aria-busy", "true");
  $("history").append(turn.li);
  setProgress("Sending your question…");
  let finished = false;
  let answered = false;
  try {
    const body = { message: question, useRAG: useRag };
    const conv = conversationId();
    if (conv) body.conversationId = conv;
    const resp = await post("/api/chat", session.token, body, "text/event-stream");
    await readEvents(resp, (name, data) => {
      if (name === "queued") {
        setProgress(`Position ${data.position} in the queue`, { position: String(data.position) });
      } else if (name === "started") {
        const waited = Math.round((data.queuedMs || 0) / 100) / 10;
        setProgress(waited > 0 ? `Answering (waited ${waited} s for a slot)…` : "Answering…");
      } else if (name === "delta") {
        answered = true;
        turn.answer.textContent += data.text;
      } else if (name === "citations") {
        renderCitations(turn.citations, Array.isArray(data) ? data : []);
      } else if (name === "done") {
        finished = true;
        turn.answer.textContent = data.answer;
        renderCitations(turn.citations, data.citations || []);
        setQuota(data.queriesRemaining);
        window.sessionStorage.setItem(CONVERSATION, data.conversationId);
        const h = loadHistory();
        h.push({
          question,
          answer: data.answer,
          citations: data.citations || [],
          conversationId: data.conversationId,
        });
        saveHistory(h);
        $("question").value = "";
      } else if (name === "error") {
        finished = true;
        throw new Problem(data.status || 503, data, data.retryAfter);
      }
    });
    if (!finished) {
      throw new Problem(0, { code: "network", detail: "the connection closed before the answer was complete" }, null);
    }
    setProgress(null);
  } catch (e) {
    setProgress(null);
    // A question that got no answer leaves the history (it stays in the box, to send again).
    if (!answered) turn.li.remove();
    else turn.li.classList.add("incomplete");
    refuse(e instanceof Problem ? e : new Problem(0, { code: "network" }, null));
  } finally {
    turn.answer.removeAttribute("aria-busy");
    busy = false;
    updateAsk();
    updateExports();
  }
}

async function exportAs(format) {
  const conv = conversationId();
  if (!conv) return;
  const status = $("export-status");
  status.textContent = `Preparing ${format}…`;
  try {
    const resp = await post("/api/export", session.token, { conversationId: conv, format }, "*/*");
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = `conversation-${conv}.${EXTENSIONS[format]}`;
    document.body.append(a);
    a.click();
    a.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 10000);
    status.textContent = `Downloaded ${a.download}.`;
  } catch (e) {
    status.textContent = "";
    refuse(e instanceof Problem ? e : new Problem(0, { code: "network" }, null));
  }
}

function showSignIn(message) {
  $("signin").hidden = false;
  $("chat").hidden = true;
  const err = $("signin-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("token-input").focus();
}

function showChat() {
  $("signin").hidden = true;
  $("chat").hidden = false;
  $("who").textContent = tokenSubject(session.token) || "(token without a user id)";
  renderHistory();
  $("question").focus();
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
    clearRefusal();
    showChat();
  });
  $("signout").addEventListener("click", () => {
    session.clear();
    window.sessionStorage.removeItem(HISTORY);
    window.sessionStorage.removeItem(CONVERSATION);
    clearRefusal();
    showSignIn();
  });
  $("ask-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("question").value.trim();
    if (!q || busy || waiting) return;
    ask(q, $("use-rag").checked);
  });
  // Ctrl+Enter (or Cmd+Enter) sends, as in most chat boxes; Enter alone makes a new line.
  $("question").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  for (const b of document.querySelectorAll("button.export")) {
    b.addEventListener("click", () => exportAs(b.dataset.format));
  }
  $("new-conversation").addEventListener("click", () => {
    if (conversationId() === null) return;
    window.sessionStorage.removeItem(CONVERSATION);
    const h = loadHistory();
    h.push({ separator: true });
    saveHistory(h);
    renderHistory();
    $("question").focus();
  });
  if (session.token) showChat();
  else showSignIn();
}

main();
