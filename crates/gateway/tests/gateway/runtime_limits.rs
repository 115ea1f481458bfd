//! Limits changed at runtime through the admin endpoint: fleet-wide within a second, kept over a
//! restart, per-layer modes, and the endpoint's refusals. Every process real.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    ADMIN, ADMIN_TOKEN as TOKEN, App, Gateway, admin_env as env, admin_ok, client, limits,
    problem_code, wait_version,
};

fn policy(app: &App, extra: &str) -> String {
    format!(
        r#"upstream = "{}"
[identity]
header = "X-User-Id"
[admission]
classes = ["chat"]
global_concurrency = 4
per_user_concurrency = 4
queue_timeout_ms = 30000
[[routes]]
method = "POST"
path = "/work"
class = "chat"
[[routes]]
path = "/work"
per_ip_per_min = 100
{extra}"#,
        app.url()
    )
}

fn route<'a>(limits: &'a Value, path: &str) -> &'a Value {
    limits["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == path && r["method"] == "*")
        .unwrap()
}

#[tokio::test]
async fn a_change_on_one_replica_is_in_force_on_every_replica_within_a_second_and_after_restart() {
    let app = App::start();
    let p = policy(&app, "");
    let prefix = testkit::unique_prefix("gw-runtime");
    let a = Gateway::start(&p, &prefix, &env()).await;
    let b = Gateway::start(&p, &prefix, &env()).await;
    let c = Gateway::start(&p, &prefix, &env()).await;
    assert_eq!(limits(&a).await["version"], 0);

    // Per-address window lowered from 100 to 2 on one replica.
    let v = admin_ok(&a, json!({"action": "set-limits", "route": "/work", "limits": {"per_ip_per_min": 2}, "by": "alice"})).await;
    let version = v["limits"]["version"].as_u64().unwrap();
    assert_eq!(version, 1);
    let took = wait_version(&[&a, &b, &c], version, Duration::from_secs(1)).await;
    eprintln!("set-limits in force on 3 replicas after {took:?}");
    for g in [&a, &b, &c] {
        let l = limits(g).await;
        assert_eq!(route(&l, "/work")["per_ip_per_min"], 2, "{l}");
        assert_eq!(l["updated_by"], "alice");
        assert!(l["updated_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }
    // Behaviour: the window is fleet-wide; after two requests every replica refuses.
    let cl = client();
    for g in [&a, &b] {
        let r = cl.get(g.url("/work?ms=0")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for g in [&a, &b, &c] {
        let r = cl.get(g.url("/work?ms=0")).send().await.unwrap();
        assert_eq!(r.status(), 429, "replica on {}", g.port);
        assert_eq!(problem_code(r).await, "rate_limited");
    }

    // Global concurrency lowered from 4 to 2 on another replica.
    admin_ok(
        &b,
        json!({"action": "set-limits", "admission": {"global_concurrency": 2}}),
    )
    .await;
    let took = wait_version(&[&a, &b, &c], 2, Duration::from_secs(1)).await;
    eprintln!("admission cap in force on 3 replicas after {took:?}");
    let gws = [&a, &b, &c];
    let mut calls = Vec::new();
    for i in 0..9 {
        let req = cl
            .post(gws[i % 3].url("/work?ms=300"))
            .header("x-user-id", format!("u{i}"));
        calls.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    let s = app.stats().await;
    assert_eq!(
        s["max_in_flight"], 2,
        "the lowered cap is reached and never exceeded: {s}"
    );

    // A replica restarted comes up with the stored limits.
    drop(c);
    let d = Gateway::start(&p, &prefix, &env()).await;
    let l = limits(&d).await;
    assert_eq!(l["version"], 2, "{l}");
    assert_eq!(route(&l, "/work")["per_ip_per_min"], 2);
    assert_eq!(l["admission"]["global_concurrency"], 2);

    // Back to the policy's values everywhere.
    admin_ok(&d, json!({"action": "reset-limits"})).await;
    wait_version(&[&a, &b, &d], 3, Duration::from_secs(1)).await;
    let l = limits(&a).await;
    assert_eq!(route(&l, "/work")["per_ip_per_min"], 100);
    assert_eq!(l["admission"]["global_concurrency"], 4);
}

#[tokio::test]
async fn modes_switch_per_layer_and_the_admin_path_is_the_gateways() {
    let app = App::start();
    let p = policy(&app, "").replace("per_ip_per_min = 100", "per_ip_per_min = 1");
    let prefix = testkit::unique_prefix("gw-modes");
    let a = Gateway::start(&p, &prefix, &env()).await;
    let b = Gateway::start(&p, &prefix, &env()).await;
    let cl = client();
    let get = |g: &Gateway| cl.get(g.url("/work?ms=0")).send();
    assert_eq!(get(&a).await.unwrap().status(), 200);
    assert_eq!(get(&b).await.unwrap().status(), 429);

    // Off for the whole service: no refusal, no mark.
    admin_ok(
        &a,
        json!({"action": "set-mode", "route": "*", "layer": "window", "mode": "off"}),
    )
    .await;
    wait_version(&[&a, &b], 1, Duration::from_secs(1)).await;
    for g in [&a, &b] {
        let r = get(g).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(!r.headers().contains_key("limit-shadow-refusal"));
        let l = limits(g).await;
        assert_eq!(route(&l, "/work")["modes"]["window"], "off");
        assert_eq!(route(&l, "/work")["modes"]["admission"], "enforce");
    }

    // Shadow on the route: passes, marked.
    admin_ok(
        &b,
        json!({"action": "set-mode", "route": "/work", "layer": "window", "mode": "shadow"}),
    )
    .await;
    wait_version(&[&a, &b], 2, Duration::from_secs(1)).await;
    for g in [&a, &b] {
        let r = get(g).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["limit-shadow-refusal"], "rate_limited");
    }

    // Enforcing again after a reset of the route.
    admin_ok(&a, json!({"action": "reset-limits", "route": "/work"})).await;
    admin_ok(&a, json!({"action": "reset-limits", "route": "*"})).await;
    wait_version(&[&a, &b], 4, Duration::from_secs(1)).await;
    assert_eq!(get(&b).await.unwrap().status(), 429);

    // The admin path never reaches the app.
    let served = app.stats().await["served"].clone();
    let r = cl.get(a.url(ADMIN)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"status": "healthy"}),
        "no limits without the token"
    );
    assert_eq!(app.stats().await["served"], served);
}

#[tokio::test]
async fn admin_refusals_have_stable_codes_and_name_the_field() {
    let app = App::start();
    let p = policy(&app, "[admin]\npath = \"/_fleetgate\"\n");
    let prefix = testkit::unique_prefix("gw-admin");
    let gw = Gateway::start(&p, &prefix, &env()).await;
    let cl = client();
    let url = gw.url("/_fleetgate");
    let body = json!({"action": "set-mode", "route": "*", "layer": "all", "mode": "off"});
    let r = cl.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(problem_code(r).await, "unauthorized");
    let r = cl
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(problem_code(r).await, "forbidden");

    let bad = |body: Value| {
        let req = cl.post(&url).bearer_auth(TOKEN).json(&body);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 400, "{body}");
            assert_eq!(
                r.headers()["content-type"],
                "application/problem+json",
                "{body}"
            );
            let doc: Value = r.json().await.unwrap();
            assert_eq!(doc["code"], "invalid_request", "{body}");
            doc["field"].as_str().unwrap().to_string()
        }
    };
    let cases = [
        (
            json!({"action": "set-limits", "route": "/nope", "limits": {"per_ip_per_min": 3}}),
            "route",
        ),
        (
            json!({"action": "set-limits", "route": "/work", "limits": {"per_ip_per_min": 0}}),
            "limits.per_ip_per_min",
        ),
        (
            json!({"action": "set-limits", "route": "/work", "limits": {"per_ip_per_min": -5}}),
            "limits.per_ip_per_min",
        ),
        (
            json!({"action": "set-limits", "route": "/work", "limits": {"daily_quota": 3}}),
            "limits.daily_quota",
        ),
        (
            json!({"action": "set-limits", "admission": {"global_concurrency": 0}}),
            "admission.global_concurrency",
        ),
        (
            json!({"action": "set-limits", "admission": {"per_user_concurrency": "two"}}),
            "admission.per_user_concurrency",
        ),
        (
            json!({"action": "set-mode", "route": "/work", "layer": "queue", "mode": "off"}),
            "layer",
        ),
        (
            json!({"action": "set-mode", "route": "/work", "layer": "window", "mode": "block"}),
            "mode",
        ),
        (
            json!({"action": "set-mode", "route": "/x", "layer": "window", "mode": "off"}),
            "route",
        ),
        (json!({"action": "explode"}), "action"),
        (json!({"action": "set-limits", "colour": 1}), "colour"),
    ];
    for (body, field) in cases {
        assert_eq!(bad(body.clone()).await, field, "{body}");
    }
    let r = cl
        .post(&url)
        .bearer_auth(TOKEN)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing was stored by any of them.
    let r = cl.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["limits"]["version"], 0, "{v}");

    // Without a token configured every admin action is forbidden, whatever is sent.
    let open = Gateway::start(&p, &prefix, &[]).await;
    let r = cl
        .post(open.url("/_fleetgate"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(problem_code(r).await, "forbidden");
}

#[tokio::test]
async fn a_daily_quota_and_the_breaker_mode_change_at_runtime() {
    tokio::time::sleep(testkit::wait_clear_of_utc_midnight(Duration::from_secs(60))).await;
    let app = App::start();
    let p = format!(
        "upstream = \"{}\"\n[identity]\nheader = \"X-User-Id\"\n\
         [[routes]]\npath = \"/work\"\ndaily_quota = 1\n\
         [breaker]\nfailure_threshold = 1\nopen_ms = 60000\nopen_max_ms = 60000\n",
        app.url()
    );
    let db = crate::harness::database_url();
    let mut env = env().to_vec();
    env.push(("FLEETGATE_DATABASE_URL", db.as_str()));
    let gw = Gateway::start(&p, &testkit::unique_prefix("gw-rt-quota"), &env).await;
    let user = testkit::unique_prefix("rt-quota-user");
    let cl = client();
    let call = |q: &str| {
        cl.get(gw.url(&format!("/work?ms=0{q}")))
            .header("x-user-id", &user)
            .send()
    };
    // Read to the end: a client gone before the first body byte is not charged.
    assert_eq!(call("").await.unwrap().text().await.unwrap(), "ok");
    let r = call("").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(problem_code(r).await, "quota_exhausted");
    // Raised at runtime: the day's count stays, the new limit applies to the next request.
    admin_ok(
        &gw,
        json!({"action": "set-limits", "route": "/work", "limits": {"daily_quota": 2}}),
    )
    .await;
    assert_eq!(route(&limits(&gw).await, "/work")["daily_quota"], 2);
    // Read to the end: a client gone before the first body byte is not charged.
    assert_eq!(call("").await.unwrap().text().await.unwrap(), "ok");
    assert_eq!(call("").await.unwrap().status(), 429);
    // The quota off: no refusal.
    admin_ok(
        &gw,
        json!({"action": "set-mode", "route": "/work", "layer": "quota", "mode": "off"}),
    )
    .await;
    // Read to the end: a client gone before the first body byte is not charged.
    assert_eq!(call("").await.unwrap().text().await.unwrap(), "ok");

    // One failure opens the breaker: refused with 503 circuit_open...
    assert_eq!(call("&status=500").await.unwrap().status(), 500);
    let r = call("").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(problem_code(r).await, "circuit_open");
    // ...until the breaker is set off for the whole service: straight to the app.
    admin_ok(
        &gw,
        json!({"action": "set-mode", "route": "*", "layer": "breaker", "mode": "off"}),
    )
    .await;
    // Read to the end: a client gone before the first body byte is not charged.
    assert_eq!(call("").await.unwrap().text().await.unwrap(), "ok");
    // In shadow it lets the request through, marked.
    admin_ok(
        &gw,
        json!({"action": "set-mode", "route": "*", "layer": "breaker", "mode": "shadow"}),
    )
    .await;
    let r = call("").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["limit-shadow-refusal"], "circuit_open");
}
