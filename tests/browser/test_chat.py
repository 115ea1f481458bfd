"""The chat page against real replicas: a streamed answer with citations, the fleet-wide queue
counting down, and the per-IP window's countdown."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from conftest import screenshot
from fleet import user_token
from pages import ChatPage

CITATION_HOSTS = re.compile(r"^https://(pubmed\.ncbi\.nlm\.nih\.gov|www\.semanticscholar\.org)/")


def test_question_streams_an_answer_with_citations(fleet, client):
    # Slow chunks, so the answer is seen while it streams.
    fleet.sim_control({"llm_chunk_delay_ms": 120})
    page = client().new_page()
    chat = ChatPage(page, fleet.replicas[0]).open_signed_in(user_token("user-ask"))
    assert chat.signed_in_as() == "user-ask"
    # The fragment is gone from the address bar once read.
    assert "#" not in page.url and "token" not in page.url

    chat.ask_with_keyboard("Does metformin reduce cardiovascular risk in type 2 diabetes?")
    chat.expect_streaming()
    chat.expect_answered()
    links = chat.citation_links()
    expect(links.first).to_be_visible()
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert hrefs and all(CITATION_HOSTS.match(h) for h in hrefs), hrefs
    expect(chat.last_turn().locator(".citations li").first).to_contain_text(re.compile("PubMed|Semantic Scholar"))
    assert chat.queries_left() == "4"

    bib = chat.export("BibTeX")
    assert bib.suggested_filename.endswith(".bib")
    assert open(bib.path(), encoding="utf-8").read().lstrip().startswith("@")
    md = chat.export("Markdown")
    assert "metformin" in open(md.path(), encoding="utf-8").read().lower()
    screenshot(page, "chat")

    # This session's history survives a reload; the token stays in sessionStorage only.
    page.reload()
    expect(page.locator("#history .turn")).to_have_count(1)
    assert page.evaluate("() => window.localStorage.length") == 0
    assert page.evaluate("() => document.cookie") == ""


def test_second_page_counts_down_its_queue_position_then_gets_its_answer(fleet, client):
    # One slot fleet-wide and a slow LLM: the first question holds the slot for 3 s.
    fleet.sim_control({"llm_answer_latency_ms": 3000})
    first = ChatPage(client().new_page(), fleet.replicas[0]).open_signed_in(user_token("queue-a"))
    second = ChatPage(client().new_page(), fleet.replicas[1]).open_signed_in(user_token("queue-b"))
    third = ChatPage(client().new_page(), fleet.replicas[1]).open_signed_in(user_token("queue-c"))

    first.ask("First question, holding the only slot", rag=False)
    expect(first.progress).to_contain_text("Answering")
    second.ask("Second question", rag=False)
    second.expect_position(1)
    # On another replica than the slot holder: the queue is the fleet's, not a replica's.
    third.ask("Third question", rag=False)
    third.expect_position(2)
    third.expect_position(1)
    expect(third.progress).to_contain_text("Answering", timeout=30_000)
    third.expect_answered()
    first.expect_answered()
    second.expect_answered()


def test_per_ip_window_refusal_counts_down(fleet, client):
    page = client().new_page()
    chat = ChatPage(page, fleet.replicas[0]).open_signed_in(user_token("user-window"))
    for i in range(3):
        chat.ask(f"Question {i + 1} of a busy minute", rag=False)
        chat.expect_answered()
    chat.ask("One too many", rag=False)
    chat.expect_refusal("rate_limited", "Too many questions came from your network address")
    first = chat.countdown_seconds()
    assert 0 < first <= 60
    expect(chat.ask_button()).to_be_disabled()
    chat.expect_countdown_below(first, timeout=5_000)
    # The refused question was not added to the history; it waits in the box to be sent again.
    expect(page.locator("#history .turn")).to_have_count(3)
    expect(page.get_by_label("Your question")).to_have_value("One too many")


def test_pasted_token_signs_in_and_a_bad_one_is_refused_clearly(fleet, client):
    page = client().new_page()
    chat = ChatPage(page, fleet.replicas[1]).open()
    chat.sign_in_by_paste("not-a-token")
    chat.ask("Anything", rag=False)
    # Back at the sign-in form, which says why.
    expect(page.get_by_role("alert")).to_have_text(re.compile("Your token was not accepted"))
    expect(page.get_by_label("Access token")).to_be_visible()
    chat.sign_in_by_paste(user_token("user-paste"))
    assert chat.signed_in_as() == "user-paste"


def test_page_fits_a_phone(fleet, client):
    ctx = client(viewport={"width": 375, "height": 740})
    page = ctx.new_page()
    ChatPage(page, fleet.replicas[0]).open_signed_in(user_token("user-phone"))
    fits = "() => document.documentElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(fits)
    admin = ctx.new_page()
    admin.goto(f"{fleet.replicas[0]}/admin")
    expect(admin.get_by_label("Admin token")).to_be_visible()
    assert admin.evaluate(fits)
