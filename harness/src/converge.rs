//! After a run: waiting until the system has converged ([`converge`]), then
//! counting what became of the orders the clients were told about
//! ([`tally`], by the rules of [`verdict`](crate::verdict)).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::api::count;
use crate::clients::{Answer, Asked};
use crate::env::TestEnv;
use crate::mode::Mode;
use crate::verdict::{Observed, Tally, verdict};

/// Reads what became of the clients' `answers` (call after [`converge`])
/// and counts it with [`verdict`].
pub async fn tally(env: &TestEnv, answers: &[Answer]) -> anyhow::Result<Tally> {
    let rewards_db = env.rewards_db().await;
    let ledger: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT order_id, customer_id, points FROM reward_ledger WHERE kind = 'credit'",
    )
    .fetch_all(&rewards_db)
    .await?;
    let reversed: HashSet<Uuid> =
        sqlx::query_scalar("SELECT order_id FROM reward_ledger WHERE kind = 'reversal'")
            .fetch_all(&rewards_db)
            .await?
            .into_iter()
            .collect();
    let balances: BTreeMap<String, i64> =
        sqlx::query_as("SELECT customer_id, balance FROM reward_accounts")
            .fetch_all(&rewards_db)
            .await?
            .into_iter()
            .collect();
    let held: HashMap<Uuid, Asked> = sqlx::query_as::<_, (Uuid, String, i64, String)>(
        "SELECT id, customer_id, total_minor, currency FROM orders",
    )
    .fetch_all(&env.orders_db().await)
    .await?
    .into_iter()
    .map(|(id, customer_id, total_minor, currency)| {
        let asked = Asked {
            customer_id,
            total_minor,
            currency,
        };
        (id, asked)
    })
    .collect();
    Ok(verdict(&Observed {
        answers,
        held: &held,
        ledger: &ledger,
        reversed: &reversed,
        balances: &balances,
    }))
}

/// Waits until every acknowledged order is credited — or, for the control
/// that loses orders, until the consumer has nothing left and the ledger has
/// stopped growing. Returns when that was.
pub async fn converge(env: &TestEnv, acknowledged: &[Uuid], mode: Mode) -> anyhow::Result<Instant> {
    let wanted: HashSet<Uuid> = acknowledged.iter().copied().collect();
    let rewards_db = &env.rewards_db().await;
    let started = Instant::now();
    let mut last = (-1_i64, Instant::now());
    loop {
        let credited: Vec<Uuid> =
            sqlx::query_scalar("SELECT order_id FROM reward_ledger WHERE kind = 'credit'")
                .fetch_all(rewards_db)
                .await
                .unwrap_or_default();
        let missing = wanted.len() - credited.iter().filter(|id| wanted.contains(id)).count();
        if missing == 0 {
            let converged = Instant::now();
            if mode == Mode::SelfRead {
                env.wait_until_consumed_by("order-history").await;
            }
            env.wait_until_consumed_by("rewards").await;
            return Ok(converged);
        }
        let now = credited.len() as i64;
        if now != last.0 {
            last = (now, Instant::now());
        } else if mode == Mode::DualWrite && last.1.elapsed() > Duration::from_secs(3) {
            env.wait_until_consumed_by("rewards").await;
            return Ok(last.1);
        }
        if started.elapsed() > Duration::from_secs(120) {
            let credited: HashSet<Uuid> = credited.into_iter().collect();
            let absent: Vec<Uuid> = wanted
                .iter()
                .filter(|id| !credited.contains(id))
                .copied()
                .collect();
            let orders_db = env.orders_db().await;
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE id = ANY($1)")
                .bind(&absent)
                .fetch_one(&orders_db)
                .await
                .unwrap_or(-1);
            let outbox = count(&orders_db, "outbox").await;
            let names = shared_events::Names::new(env.events_prefix())?;
            let js = env.jetstream().await;
            let stream = js.get_stream(names.stream()).await?;
            let mut in_stream = 0;
            let mut sequences = Vec::new();
            for seq in 1..=env.stream_messages().await {
                if let Ok(message) = stream.get_raw_message(seq).await
                    && let Ok(event) = shared_events::Envelope::<shared_events::OrderPlaced>::decode(
                        &message.payload,
                    )
                    && absent.contains(&event.payload.order_id)
                {
                    in_stream += 1;
                    sequences.push(seq);
                }
            }
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
                .get_consumer_from_stream("rewards", names.stream())
                .await?;
            let info = consumer.info().await?.clone();
            eprintln!(
                "missing orders' events: {in_stream} at sequences {sequences:?}; {} dead letters; consumer: {info:?}",
                env.dead_letters().await
            );
            anyhow::bail!(
                "{missing} acknowledged orders still not credited after 120 s \
                 ({stored} of them in the orders table, {outbox} outbox rows, {} stream messages, {} ledger rows)",
                env.stream_messages().await,
                credited.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
