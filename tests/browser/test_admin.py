"""The fleet console against real replicas: slots in use while an answer runs, and a breaker
forced open by upstream failures, seen open, then force-closed from the console."""

from __future__ import annotations

from playwright.sync_api import expect

from conftest import screenshot
from fleet import ADMIN_TOKEN, http, user_token
from pages import AdminPage, ChatPage


def test_console_shows_every_replica_and_the_slot_a_slow_answer_holds(fleet, client):
    fleet.sim_control({"llm_answer_latency_ms": 6000})
    admin = AdminPage(client().new_page(), fleet.replicas[1]).open_signed_in(ADMIN_TOKEN)
    admin.expect_replicas(2, mode="shared")
    admin.expect_slots(0, 1)

    chat = ChatPage(client().new_page(), fleet.replicas[0]).open_signed_in(user_token("admin-watch-a"))
    waiter = ChatPage(client().new_page(), fleet.replicas[1]).open_signed_in(user_token("admin-watch-b"))
    chat.ask("A slow question", rag=False)
    expect(chat.progress).to_contain_text("Answering")
    admin.expect_slots(1, 1)
    admin.expect_users_at_cap(1)
    waiter.ask("A question that waits", rag=False)
    waiter.expect_position(1)
    admin.expect_waiting("chat", 1)
    # Each replica's row: the slot on the first replica, the waiter on the second.
    admin.expect_replica_row(fleet.replicas[0], slots_held=1, waiting=0)
    admin.expect_replica_row(fleet.replicas[1], slots_held=0, waiting=1)
    # All of it seen while the slow answer was still running.
    expect(chat.progress).to_contain_text("Answering")
    screenshot(admin.page, "admin")

    chat.expect_answered()
    waiter.expect_answered()
    admin.expect_slots(0, 1, timeout=20_000)
    admin.expect_waiting("chat", 0)


def test_breaker_opened_by_failures_is_force_closed_from_the_console(fleet, client):
    admin = AdminPage(client().new_page(), fleet.replicas[0]).open_signed_in(ADMIN_TOKEN)
    admin.expect_breaker("llm", "closed")

    # Every LLM call fails: two failures (the threshold) open the shared breaker.
    fleet.sim_control({"llm": {"error_rate": 1.0, "error_status": 500}})
    for i in range(2):
        status, _, body = http(
            "POST",
            fleet.replicas[i % 2] + "/api/chat",
            {"message": f"failing call {i}", "useRAG": False},
            token=user_token("breaker-driver"),
            headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
        )
        assert status == 503 and body["code"] == "upstream_unavailable", (status, body)
    admin.expect_breaker("llm", "open")
    expect(admin.breaker("llm")).to_contain_text("in ")

    # The chat page says the upstream is down, with a countdown from Retry-After.
    chat = ChatPage(client().new_page(), fleet.replicas[1]).open_signed_in(user_token("breaker-user"))
    chat.ask("Is anyone there?", rag=False)
    chat.expect_refusal("upstream_unavailable", "A service the answer depends on is down")
    assert chat.countdown_seconds() > 0

    admin.cancel_action("Force-close circuits")
    admin.expect_breaker("llm", "open")
    admin.run_action("Force-close circuits")
    assert '"closed"' in admin.action_result()
    admin.expect_breaker("llm", "closed")
    for i in range(len(fleet.replicas)):
        states = {b["service"]: b["state"] for b in fleet.health(i)["components"]["breakers"]["states"]}
        assert states["llm"] == "closed", (i, states)


def test_every_action_asks_first_and_shows_its_result(fleet, client):
    admin = AdminPage(client().new_page(), fleet.replicas[0]).open_signed_in(ADMIN_TOKEN)
    for label, field in [
        ("Reset queue", "waitersReleased"),
        ("Reset errors", "reset"),
        ("Clean up sessions", ""),
        ("Emergency cleanup", "connections"),
    ]:
        admin.run_action(label)
        assert field in admin.action_result(), (label, admin.action_result())
    admin.run_action_with_keyboard("Reset errors")
    assert "reset-errors: done" in admin.action_result()


def test_console_refuses_a_user_token(fleet, client):
    page = client().new_page()
    page.goto(f"{fleet.replicas[0]}/admin#token={user_token('not-an-admin')}")
    expect(page.locator("#signin-error")).to_contain_text("The admin token was refused")
    expect(page.get_by_label("Admin token")).to_be_visible()


def test_console_shows_a_replica_running_degraded_while_redis_is_down(fleet, client):
    admin = AdminPage(client().new_page(), fleet.replicas[0]).open_signed_in(ADMIN_TOKEN)
    admin.expect_replicas(2, mode="shared")
    fleet.redis_stop()
    try:
        # Nothing can be read from Redis: the console says so and shows the answering replica,
        # which admits from its local share of the caps.
        expect(admin.page.locator("#fleet-note")).to_contain_text("Redis cannot be read")
        admin.expect_replicas(1, mode="degraded")
        expect(admin.page.locator("#redis")).to_have_attribute("data-status", "down")
        expect(admin.page.locator("#status")).to_have_text("degraded")
        expect(admin.page.locator("#slots-in-use")).to_contain_text("unknown")
    finally:
        fleet.redis_start()
    # Back to shared limits without a restart (after the fleet has re-registered).
    admin.expect_replicas(2, mode="shared", timeout=40_000)
    expect(admin.page.locator("#redis")).to_have_attribute("data-status", "up")
