// Sign-in state of a page: the token lives in sessionStorage only (gone when the tab closes,
// never sent by the browser on its own as a cookie would be). A sign-in link carries the token in
// the URL fragment, which browsers never send to a server; it is read once and removed from the
// address bar and the history entry.

export class Session {
  /** @param {string} key sessionStorage key of this page's token */
  constructor(key) {
    this.key = key;
  }

  /** Takes a token from `#token=...` if present, then forgets the fragment. */
  adoptFragment() {
    const hash = window.location.hash;
    if (!hash.startsWith("#")) return false;
    const params = new URLSearchParams(hash.slice(1));
    const token = params.get("token");
    if (token === null) return false;
    // Out of the address bar and the history entry before anything else can read or share it.
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    if (token.trim() === "") return false;
    this.set(token);
    return true;
  }

  get token() {
    return window.sessionStorage.getItem(this.key);
  }

  set(token) {
    window.sessionStorage.setItem(this.key, token.trim());
  }

  clear() {
    window.sessionStorage.removeItem(this.key);
  }
}

/** The `sub` claim of a JWT, for display only (the server verifies the token, not this). */
export function tokenSubject(token) {
  const parts = (token || "").split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const claims = JSON.parse(json);
    return typeof claims.sub === "string" ? claims.sub : null;
  } catch {
    return null;
  }
}
