"""What the pages promise about security: a strict Content-Security-Policy that the pages keep
(no violation while they run), nothing fetched from another origin, and a token that never
appears in a request URL, nor anywhere in the servers' logs."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import expect

from fleet import ADMIN_TOKEN, http, user_token
from pages import AdminPage, ChatPage

REQUIRED = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
]


def test_pages_and_assets_carry_a_strict_policy(fleet):
    for path in ["/", "/admin", "/assets/chat.js", "/assets/admin.js", "/assets/style.css"]:
        status, headers, _ = http("GET", fleet.replicas[0] + path)
        assert status == 200, path
        csp = headers.get("Content-Security-Policy")
        assert csp, f"{path}: no Content-Security-Policy"
        for directive in REQUIRED:
            assert directive in csp, (path, csp)
        assert "unsafe" not in csp and "http" not in csp and "*" not in csp, csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
    # The API's own responses are as before: no page headers on JSON.
    status, headers, _ = http("GET", fleet.replicas[0] + "/api/system-health")
    assert status == 200 and "Content-Security-Policy" not in headers


def test_token_never_in_a_url_nor_a_log_and_no_policy_violation(fleet, client, request_urls):
    token = user_token("user-secret-check")
    ctx = client()
    page = ctx.new_page()
    violations = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    chat = ChatPage(page, fleet.replicas[0]).open_signed_in(token)
    chat.ask("Is aspirin useful for primary prevention?", rag=True)
    chat.expect_answered()
    chat.export("RIS")
    admin_page = ctx.new_page()
    admin_page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    AdminPage(admin_page, fleet.replicas[1]).open_signed_in(ADMIN_TOKEN)
    expect(admin_page.locator("#replicas tbody tr")).to_have_count(2)
    assert violations == [], violations

    # Every request any page of the suite made: same origin as a replica, no token in it.
    origins = {urlsplit(r).netloc for r in fleet.replicas}
    for url in request_urls:
        parts = urlsplit(url)
        if parts.scheme in ("blob", "data"):
            continue
        assert parts.netloc in origins, f"a page fetched {url}"
        assert token not in url and ADMIN_TOKEN not in url, "a token travelled in a URL"
        assert "token=" not in url, url

    # A refused request: its log line carries the request's span, URL path included.
    assert http("POST", fleet.replicas[0] + "/api/chat", {"message": "x"}, token="bogus")[0] == 401
    # The replicas log request paths (so this check can fail) but never a token.
    logs = fleet.log_text()
    assert "url.path" in logs, "the replicas logged no request at all: the check below proves nothing"
    assert token not in logs and ADMIN_TOKEN not in logs
    signature = token.rsplit(".", 1)[1]
    assert signature not in logs
