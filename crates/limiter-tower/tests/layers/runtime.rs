//! The runtime-limits store against the real Redis: compare-and-set writes, concurrent changes
//! that both survive, and followers that see a change by pub/sub and by the version poll.

use std::time::Duration;

use limiter_tower::Mode;
use limiter_tower::runtime::{Layer, LimitsDocument, LimitsPatch, LimitsStore};

use crate::redis;

fn ip(n: u32) -> LimitsPatch {
    LimitsPatch {
        per_ip_per_min: Some(n),
        ..LimitsPatch::default()
    }
}

#[tokio::test]
async fn a_stale_write_is_refused_and_update_keeps_both_changes() {
    let store = LimitsStore::new(redis("rt-cas"), "svc");
    assert_eq!(store.load().await.unwrap().version, 0);
    // Two writers read version 0; the second one's write is stale.
    let mut first = LimitsDocument::default();
    first.set_limits("/a", ip(5)).unwrap();
    let mut second = LimitsDocument::default();
    second.set_mode("/b", &[Layer::Window], Mode::Off);
    let stored = store.write_if_current(&first).await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    assert!(stored.updated_at_ms > 1_600_000_000_000);
    assert!(store.write_if_current(&second).await.unwrap().is_none());
    assert_eq!(store.version().await.unwrap(), 1);

    // `update` re-reads and applies its change on top: nothing of the first change is lost.
    let (old, new) = store
        .update("bob", |d| {
            d.set_mode("/b", &[Layer::Window], Mode::Off);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((old.version, new.version), (1, 2));
    assert_eq!(new.scope("/a").per_ip_per_min, Some(5));
    assert_eq!(new.mode("/b", Layer::Window), Some(Mode::Off));
    assert_eq!(new.updated_by, "bob");

    // Many concurrent updates of different scopes: every one is kept, versions have no gaps.
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.update("many", |d| d.set_limits(&format!("/r{i}"), ip(i + 1)))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let doc = store.load().await.unwrap();
    assert_eq!(doc.version, 10);
    for i in 0..8u32 {
        assert_eq!(doc.scope(&format!("/r{i}")).per_ip_per_min, Some(i + 1));
    }
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(store.key())
        .query_async(
            &mut ::redis::Client::open(testkit::redis_url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(ttl > 86_400_000, "the document has a long TTL: {ttl}");
    // A refused change stores nothing.
    assert!(
        store
            .update("x", |d| d.set_limits("/a", ip(0)))
            .await
            .is_err()
    );
    assert_eq!(store.version().await.unwrap(), 10);
}

#[tokio::test]
async fn followers_see_a_change_by_pubsub_and_by_poll() {
    let handle = redis("rt-follow");
    let store = LimitsStore::new(handle.clone(), "svc");
    // One follower polls often, one almost never: the latter sees the change by pub/sub alone.
    let mut fast = store.watch(Duration::from_millis(500)).await;
    let mut pubsub_only = store.watch(Duration::from_secs(3600)).await;
    assert_eq!(fast.borrow().version, 0);
    store
        .update("t", |d| d.set_limits("/a", ip(3)))
        .await
        .unwrap();
    for rx in [&mut fast, &mut pubsub_only] {
        tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|d| d.version == 1))
            .await
            .expect("in force within 1 s")
            .unwrap();
    }
    // A new follower starts from the stored document.
    let late = store.watch(Duration::from_millis(500)).await;
    assert_eq!(late.borrow().scope("/a").per_ip_per_min, Some(3));
}
