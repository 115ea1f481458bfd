//! Wrong admin tokens are throttled per client address, fleet-wide: past the limit an address is
//! answered 429 without its token being compared, while other addresses are untouched.

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{ADMIN, ADMIN_TOKEN, App, Gateway, client_from, problem_code};

async fn admin_get(c: &reqwest::Client, gw: &Gateway, token: &str) -> reqwest::Response {
    c.get(gw.url(ADMIN))
        .bearer_auth(token)
        .send()
        .await
        .expect("admin GET")
}

#[tokio::test]
async fn wrong_admin_tokens_block_the_guessing_address_only() {
    let app = App::start();
    let p = format!(
        "upstream = \"{}\"\n[[routes]]\npath = \"/work\"\n",
        app.url()
    );
    let prefix = testkit::unique_prefix("gw-admin-guess");
    let env = [
        ("FLEETGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("FLEETGATE_ADMIN_AUTH_FAILURES_PER_MIN", "3"),
    ];
    let a = Gateway::start(&p, &prefix, &env).await;
    let b = Gateway::start(&p, &prefix, &env).await;
    let guesser = client_from("127.0.0.2");
    let other = client_from("127.0.0.3");

    for i in 0..3 {
        let r = admin_get(&guesser, &a, &format!("guess-{i}")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "guess {i}");
        assert_eq!(problem_code(r).await, "forbidden");
    }
    let r = admin_get(&guesser, &a, "guess-3").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(problem_code(r).await, "rate_limited");
    // Even the right token is refused from that address: it is not compared.
    let r = admin_get(&guesser, &a, ADMIN_TOKEN).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    // The count is fleet-wide: the next wrong guess on another replica is refused as over.
    let r = admin_get(&guesser, &b, "guess-4").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = admin_get(&guesser, &b, ADMIN_TOKEN).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another address is unaffected: its right token works, a wrong one is only forbidden.
    let r = admin_get(&other, &a, ADMIN_TOKEN).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert!(v["limits"].is_object(), "{v}");
    let r = admin_get(&other, &a, "nope").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Nothing of this reached the app.
    assert_eq!(app.stats().await["served"], 0);
}
