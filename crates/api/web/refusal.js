// Every refusal as one clear sentence, and a live countdown from Retry-After where one is given.

const SENTENCES = {
  rate_limited: "Too many questions came from your network address in the last minute.",
  daily_quota_exhausted: "You have used all of today's questions; the quota resets at midnight UTC.",
  queue_timeout: "Every answer slot stayed busy for the whole wait, so your question was not answered (it was not counted).",
  queue_full: "Too many questions are waiting for a slot right now (yours was not counted).",
  upstream_unavailable: "A service the answer depends on is down, so the question was not sent (it was not counted).",
  upstream_timeout: "A service the answer depends on did not answer in time (your question was not counted).",
  service_unavailable: "The service is briefly unavailable",
  unauthorized: "Your token was not accepted (missing, invalid or expired): sign in again.",
  forbidden: "This token is not allowed here.",
  payload_too_large: "That message is too long.",
  network: "The server could not be reached: check your connection.",
};

/** The sentence for a Problem (api.js). */
export function sentence(problem) {
  const known = SENTENCES[problem.code];
  if (problem.code === "service_unavailable") {
    return `${known}: ${problem.detail || "retry shortly"}.`.replace(/\.\.$/, ".");
  }
  if (problem.code === "invalid_request") return `The request was refused: ${problem.detail}`;
  if (known) return known;
  return problem.detail ? `Something went wrong: ${problem.detail}` : `Something went wrong (${problem.code}).`;
}

/** "42 s", "3 min 05 s", "7 h 02 min". */
export function formatSeconds(total) {
  const s = Math.max(0, Math.ceil(total));
  if (s < 60) return `${s} s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h > 0 ? `${h} h ${two(m)} min ${two(sec)} s` : `${m} min ${two(sec)} s`;
}

/**
 * Shows `problem` in `box` (a live region): its sentence, and when a wait is given a countdown
 * that ticks every second. Calls `onReady` when the countdown reaches zero. Returns a function
 * that stops the countdown.
 */
export function showRefusal(box, problem, onReady) {
  box.replaceChildren();
  box.hidden = false;
  box.dataset.code = problem.code;
  const text = document.createElement("p");
  text.className = "refusal-text";
  text.textContent = sentence(problem);
  box.append(text);
  if (problem.retryAfter === null) {
    delete box.dataset.waiting;
    return () => {};
  }
  const wait = document.createElement("p");
  wait.className = "countdown";
  const label = document.createElement("span");
  label.textContent = "You can try again in ";
  const value = document.createElement("strong");
  value.className = "countdown-value";
  wait.append(label, value);
  box.append(wait);
  const until = Date.now() + problem.retryAfter * 1000;
  box.dataset.waiting = "true";
  let timer = null;
  const tick = () => {
    const left = (until - Date.now()) / 1000;
    if (left <= 0) {
      window.clearInterval(timer);
      wait.textContent = "You can try again now.";
      delete box.dataset.waiting;
      if (onReady) onReady();
      return;
    }
    value.textContent = formatSeconds(left);
    value.dataset.seconds = String(Math.ceil(left));
  };
  tick();
  timer = window.setInterval(tick, 250);
  return () => window.clearInterval(timer);
}
