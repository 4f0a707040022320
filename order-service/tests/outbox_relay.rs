//! One step of the outbox relay, driven by the test: a real database
//! (`#[sqlx::test]`) and a private nats-server (the harness's), no
//! service process. The step publishes what is waiting, awaits every PubAck,
//! then deletes the rows; the broker drops a batch published twice.

use std::time::Duration;

use harness::servers::Nats;
use order_service::patterns::outbox::relay::{Relay, Step};
use shared_events::{Names, StreamSettings, jetstream};
use sqlx::PgPool;
use uuid::Uuid;

/// A private nats-server with the order stream under its own prefix, and a
/// relay over `pool` and that stream.
async fn relay_to_new_stream(pool: &PgPool) -> anyhow::Result<(Nats, Relay, Names)> {
    let nats = tokio::task::spawn_blocking(Nats::start).await??;
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    let names = Names::new("relay")?;
    let features = jetstream::ensure_streams(&js, &names, &StreamSettings::default()).await?;
    let publisher = jetstream::Publisher::new(client, features.atomic_batches);
    let relay = Relay::new(pool.clone(), publisher, 100, Duration::from_secs(1));
    Ok((nats, relay, names))
}

/// Commits an outbox row for each event id.
async fn waiting(pool: &PgPool, names: &Names, ids: &[Uuid]) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    for (i, id) in ids.iter().enumerate() {
        let payload = serde_json::json!({ "n": i });
        sqlx::query("INSERT INTO outbox (event_id, subject, payload) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(names.order_placed_subject())
            .bind(payload)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn stream_messages(nats: &Nats, names: &Names) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
    Ok(js
        .get_stream(names.stream())
        .await?
        .info()
        .await?
        .state
        .messages)
}

async fn outbox_rows(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await?)
}

#[sqlx::test]
async fn a_relay_step_publishes_the_waiting_rows_then_deletes_them(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (nats, relay, names) = relay_to_new_stream(&pool).await?;
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    waiting(&pool, &names, &ids).await?;

    assert_eq!(relay.relay_next_batch().await?, Step::Published(3));
    assert_eq!(outbox_rows(&pool).await?, 0);
    assert_eq!(stream_messages(&nats, &names).await?, 3);
    assert_eq!(relay.relay_next_batch().await?, Step::Empty);
    Ok(())
}

#[sqlx::test]
async fn rows_published_again_after_a_lost_delete_are_dropped_by_the_broker(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (nats, relay, names) = relay_to_new_stream(&pool).await?;
    let ids: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();
    waiting(&pool, &names, &ids).await?;
    assert_eq!(relay.relay_next_batch().await?, Step::Published(2));
    // The same events back in the outbox: what a relay finds when it died
    // after the PubAcks and before its DELETE committed.
    waiting(&pool, &names, &ids).await?;

    assert_eq!(relay.relay_next_batch().await?, Step::Published(2));
    assert_eq!(outbox_rows(&pool).await?, 0);
    assert_eq!(stream_messages(&nats, &names).await?, 2);
    Ok(())
}
