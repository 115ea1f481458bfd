"""Page objects: one per page. Tests speak in what a user sees and does; the selectors live here.
Every wait is on visible state (Playwright's `expect`), never on time."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect


class ChatPage:
    def __init__(self, page: Page, base: str):
        self.page = page
        self.base = base

    def open_signed_in(self, token: str) -> "ChatPage":
        """Opens the sign-in link: the token in the URL fragment."""
        self.page.goto(f"{self.base}/#token={token}")
        expect(self.page.locator("#chat")).to_be_visible()
        return self

    def open(self) -> "ChatPage":
        self.page.goto(f"{self.base}/")
        return self

    def sign_in_by_paste(self, token: str) -> None:
        expect(self.page.get_by_label("Access token")).to_be_visible()
        self.page.get_by_label("Access token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.locator("#chat")).to_be_visible()

    def signed_in_as(self) -> str:
        return self.page.locator("#who").inner_text()

    def ask(self, question: str, rag: bool = True) -> None:
        box = self.page.get_by_label("Your question")
        expect(self.page.get_by_role("button", name="Ask")).to_be_enabled()
        box.fill(question)
        self.page.get_by_label("Search PubMed and Semantic Scholar first").set_checked(rag)
        self.page.get_by_role("button", name="Ask").click()

    def ask_with_keyboard(self, question: str) -> None:
        """Focus is in the question box on arrival; Ctrl+Enter sends."""
        expect(self.page.get_by_label("Your question")).to_be_focused()
        self.page.keyboard.type(question)
        self.page.keyboard.press("Control+Enter")

    @property
    def progress(self):
        return self.page.locator("#progress")

    def expect_position(self, n: int, timeout: float = 30_000) -> None:
        expect(self.progress).to_have_text(f"Position {n} in the queue", timeout=timeout)

    def last_turn(self):
        return self.page.locator("#history .turn").last

    def last_answer(self):
        return self.last_turn().locator(".answer")

    def expect_streaming(self, timeout: float = 30_000) -> None:
        """Part of the answer is shown while the rest is still coming."""
        self.page.wait_for_function(
            """() => {
                const a = document.querySelector('#history .turn:last-child .answer');
                const p = document.getElementById('progress');
                return a && a.textContent.length > 0 && a.getAttribute('aria-busy') === 'true'
                    && !p.hidden && p.textContent.startsWith('Answering');
            }""",
            timeout=timeout,
        )

    def expect_answered(self, timeout: float = 60_000) -> None:
        expect(self.last_answer()).not_to_have_attribute("aria-busy", "true", timeout=timeout)
        expect(self.last_answer()).not_to_be_empty()
        expect(self.progress).to_be_hidden()
        expect(self.refusal).to_be_hidden()

    def citation_links(self):
        return self.last_turn().locator(".citations a")

    def queries_left(self) -> str:
        return self.page.locator("#quota-value").inner_text()

    @property
    def refusal(self):
        return self.page.locator("#refusal")

    def expect_refusal(self, code: str, sentence: str, timeout: float = 30_000) -> None:
        expect(self.refusal).to_have_attribute("data-code", code, timeout=timeout)
        expect(self.refusal).to_contain_text(sentence)

    def countdown_seconds(self) -> int:
        value = self.refusal.locator(".countdown-value")
        expect(value).to_have_attribute("data-seconds", re.compile(r"^\d+$"))
        return int(value.get_attribute("data-seconds"))

    def expect_countdown_below(self, seconds: int, timeout: float = 10_000) -> None:
        self.page.wait_for_function(
            """(s) => {
                const v = document.querySelector('#refusal .countdown-value');
                return v && Number(v.dataset.seconds) < s;
            }""",
            arg=seconds,
            timeout=timeout,
        )

    def ask_button(self):
        return self.page.get_by_role("button", name="Ask")

    def export(self, label: str):
        """Clicks an export button; returns the download."""
        with self.page.expect_download() as d:
            self.page.get_by_role("button", name=label, exact=True).click()
        return d.value


class AdminPage:
    def __init__(self, page: Page, base: str):
        self.page = page
        self.base = base

    def open_signed_in(self, token: str) -> "AdminPage":
        self.page.goto(f"{self.base}/admin#token={token}")
        expect(self.page.locator("#console")).to_be_visible()
        self.expect_fresh()
        return self

    def expect_fresh(self) -> None:
        expect(self.page.locator("#updated")).to_have_attribute("data-at", re.compile(r"\d+"))

    def replica_rows(self):
        return self.page.locator("#replicas tbody tr")

    def expect_replicas(self, n: int, mode: str = "shared", timeout: float = 15_000) -> None:
        """`n` rows, all in `mode`."""
        rows = self.page.locator("#replicas tbody tr")
        expect(rows).to_have_count(n, timeout=timeout)
        expect(self.page.locator(f"#replicas tbody tr[data-mode='{mode}']")).to_have_count(n, timeout=timeout)

    def expect_replica_row(self, base: str, slots_held: int, waiting: int, timeout: float = 15_000) -> None:
        """The row of the replica listening at `base` (http://host:port)."""
        row = self.page.locator(f"#replicas tbody tr[data-listen='{base.removeprefix('http://')}']")
        expect(row.locator("td").nth(3)).to_have_text(str(slots_held), timeout=timeout)
        expect(row.locator("td").nth(4)).to_have_text(str(waiting), timeout=timeout)

    def expect_slots(self, in_use: int, cap: int, timeout: float = 15_000) -> None:
        expect(self.page.locator("#slots-in-use")).to_have_text(str(in_use), timeout=timeout)
        expect(self.page.locator("#slots-cap")).to_have_text(str(cap))

    def expect_users_at_cap(self, n: int, timeout: float = 15_000) -> None:
        expect(self.page.locator("#users-at-cap-count")).to_have_text(str(n), timeout=timeout)

    def expect_waiting(self, cls: str, n: int, timeout: float = 15_000) -> None:
        row = self.page.locator(f"#queue tbody tr[data-class='{cls}'] td").nth(1)
        expect(row).to_have_text(str(n), timeout=timeout)

    def breaker(self, service: str):
        return self.page.locator(f"#breakers tbody tr[data-service='{service}']")

    def expect_breaker(self, service: str, state: str, timeout: float = 15_000) -> None:
        expect(self.breaker(service)).to_have_attribute("data-state", state, timeout=timeout)

    def run_action(self, label: str) -> None:
        """Clicks an action, confirms it in the dialog, and waits for its result."""
        result = self.page.locator("#action-result")
        run = self._next_run(result)
        self.page.get_by_role("button", name=label).click()
        dialog = self.page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        dialog.get_by_role("button", name="Run it").click()
        expect(dialog).to_be_hidden()
        self._wait_ok(result, run)

    @staticmethod
    def _next_run(result) -> str:
        """The run number the next action will carry: the previous action's `data-ok` stays on
        the element until the new run starts, so only the run number tells them apart."""
        return str(int(result.get_attribute("data-run") or 0) + 1)

    @staticmethod
    def _wait_ok(result, run: str) -> None:
        expect(result).to_have_attribute("data-run", run)
        expect(result).to_have_attribute("data-ok", "true")

    def run_action_with_keyboard(self, label: str) -> None:
        """The same with the keyboard only: Enter on the button; in the dialog, focus starts on
        Cancel, Tab moves to Run it, Enter runs it."""
        result = self.page.locator("#action-result")
        run = self._next_run(result)
        self.page.get_by_role("button", name=label).focus()
        self.page.keyboard.press("Enter")
        dialog = self.page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
        self.page.keyboard.press("Tab")
        expect(dialog.get_by_role("button", name="Run it")).to_be_focused()
        self.page.keyboard.press("Enter")
        expect(dialog).to_be_hidden()
        self._wait_ok(result, run)

    def cancel_action(self, label: str) -> None:
        self.page.get_by_role("button", name=label).click()
        dialog = self.page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()

    def action_result(self) -> str:
        return self.page.locator("#action-result").inner_text()
