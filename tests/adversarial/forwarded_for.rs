//! `X-Forwarded-For` from a trusted proxy (the test plays nginx on 127.0.0.1, which appends
//! `, $remote_addr` to whatever the client sent). Junk the client put in its own header used to
//! make the whole header unreadable, so the client was keyed as the proxy: a fresh window.

use reqwest::header::HeaderValue;

use crate::harness::serial;
use crate::support::{Replica, ask, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_in_x_forwarded_for_does_not_reset_the_window() {
    let _s = serial().await;
    let r = Replica::start(
        "xff",
        &[
            ("FLEETGATE_CHAT_PER_IP_PER_MIN", "5"),
            ("FLEETGATE_PIPELINE", "echo"),
        ],
    )
    .await;
    let send = |xff: Vec<&'static [u8]>| {
        let mut req = r
            .client
            .post(r.url("/api/chat"))
            .bearer_auth(token("ivan"))
            .json(&ask("hello", false));
        for v in xff {
            req = req.header("x-forwarded-for", HeaderValue::from_bytes(v).unwrap());
        }
        req.send()
    };
    for i in 0..5 {
        let resp = send(vec![b"203.0.113.7"]).await.unwrap();
        assert_eq!(resp.status(), 200, "chat {i}");
    }
    // The sixth, with junk before the address the proxy appended: still the same client.
    for junk in [
        vec![&b"\xff, 203.0.113.7"[..]],
        vec![&b"\xff\xfe garbage"[..], &b"203.0.113.7"[..]],
        vec![&b"not-an-ip, 203.0.113.7"[..]],
    ] {
        let resp = send(junk.clone()).await.unwrap();
        assert_eq!(resp.status(), 429, "{junk:?}");
        assert!(resp.headers().contains_key("retry-after"));
    }
    // Junk where the trusted proxy should have written an address: nobody can say who this is,
    // and it is not the proxy.
    for junk in [vec![&b"\xff"[..]], vec![&b"203.0.113.7, junk"[..]]] {
        let resp = send(junk.clone()).await.unwrap();
        assert_eq!(resp.status(), 400, "{junk:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "invalid_request");
    }
    // Another client behind the same proxy is unaffected.
    let other = r.chat("ivan", "203.0.113.8", ask("hello", false)).await;
    assert_eq!(other.status(), 200);
}
