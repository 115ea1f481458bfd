//! Conversations in a fresh PostgreSQL database: ownership, history bound, atomic turns.
#![allow(clippy::unwrap_used)]

use chat::conversations::{ConversationError, Conversations};
use chat::export::CitedWork;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection};

/// A fresh database, migrated; dropped best-effort by the caller's `drop_db`.
async fn fresh_db() -> (sqlx::PgPool, String) {
    let admin = std::env::var("FLEETGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("fg_conv_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let url = match admin.rfind('/') {
        Some(i) => format!("{}/{name}", &admin[..i]),
        None => unreachable!(),
    };
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    sqlx::migrate!("../../migrations").run(&pool).await.unwrap();
    (pool, name)
}

async fn drop_db(pool: sqlx::PgPool, name: &str) {
    pool.close().await;
    let admin = std::env::var("FLEETGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    if let Ok(mut conn) = PgConnection::connect(&admin).await {
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = conn.execute(sqlx::AssertSqlSafe(drop)).await;
    }
}

fn work(id: &str) -> CitedWork {
    CitedWork {
        source: "pubmed".into(),
        id: id.into(),
        title: format!("Paper {id}"),
        url: format!("https://pubmed.ncbi.nlm.nih.gov/{id}/"),
        year: Some(2021),
        authors: vec!["A B".into()],
        doi: None,
        venue: None,
        pmid: Some(id.into()),
    }
}

#[tokio::test]
async fn conversations_belong_to_their_owner_and_keep_turns() {
    let (pool, name) = fresh_db().await;
    let store = Conversations::new(pool.clone());
    let id = store
        .open("alice", None, "  Does   metformin help?  ")
        .await
        .unwrap();
    store
        .append_turn(id, "Does metformin help?", "Yes [1].", &[work("1")])
        .await
        .unwrap();
    store
        .append_turn(id, "And in the elderly?", "Probably [1].", &[work("2")])
        .await
        .unwrap();

    // Continuing is allowed for the owner only; a stranger cannot even tell it exists.
    assert_eq!(store.open("alice", Some(id), "x").await.unwrap(), id);
    assert!(matches!(
        store.open("mallory", Some(id), "x").await,
        Err(ConversationError::NotFound)
    ));
    assert!(matches!(
        store.load("mallory", id, 1000).await,
        Err(ConversationError::NotFound)
    ));
    assert!(matches!(
        store.load("alice", uuid::Uuid::new_v4(), 1000).await,
        Err(ConversationError::NotFound)
    ));

    let c = store.load("alice", id, 1000).await.unwrap();
    assert_eq!(c.title, "Does metformin help?");
    assert_eq!(c.messages.len(), 4);
    assert_eq!(c.messages[1].citations[0].id, "1");
    assert_eq!(c.works().len(), 2);

    // History is bounded and in order.
    let recent = store.recent(id, 3).await.unwrap();
    assert_eq!(recent.len(), 3);
    assert_eq!(recent[0], ("assistant".to_string(), "Yes [1].".to_string()));
    assert_eq!(recent[2].0, "assistant");
    drop_db(pool, &name).await;
}
