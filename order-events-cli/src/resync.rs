//! `order-events cdc resync`: the recovery after a replication slot was lost
//! (a failover to a standby, a restore, a manual drop, WAL removed under it).
//!
//! order-service refuses to capture with such a slot, because a new one would
//! skip every order the old one had not confirmed. This command re-publishes
//! `OrderPlaced` for every order whose event the stream does not hold — read
//! back from the stream itself — with the event id derived from the order
//! (the id change capture gives it), so running it twice, or alongside a
//! reader, publishes nothing twice and credits nothing twice. Then it forgets
//! the unusable slots (dropping a lost one), which lets order-service create
//! a new slot at its next start.
//!
//! By default it compares every order with the whole stream. It does not
//! guess a starting time: an order's time is stamped by the instance that
//! took it, the stream's by the broker, and no margin covers every
//! difference between two hosts' clocks (an order stamped earlier than the
//! guess would be skipped for good). `--since` narrows the check to the
//! orders created at or after a time the operator chooses.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::consumer::DeliverPolicy;
use chrono::{DateTime, Utc};
use clap::Args;
use order_service::db::{cdc_slots, replay};
use order_service::replication::slot;
use serde::Serialize;
use shared_events::Names;
use sqlx::PgPool;
use uuid::Uuid;

/// Orders read, and stream messages fetched, per round trip.
const PAGE: i64 = 500;

#[derive(Args)]
pub struct ResyncArgs {
    /// order-service's database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Prefix of stream and subject names, as order-service uses it.
    #[arg(long, env = "EVENTS_PREFIX", default_value = "")]
    events_prefix: String,
    /// Check only the orders created at or after this time (RFC 3339, e.g.
    /// 2026-11-27T09:00:00Z), as stamped by the order-service instance that
    /// took each one. Default: every order.
    #[arg(long)]
    since: Option<String>,
    /// With --since: read the stream from this far before it (the broker's
    /// clock stamps the stream; an event read too late is only published
    /// again, and consumers apply it once).
    #[arg(long, default_value = "10m", value_parser = service_kit::duration::parse)]
    margin: Duration,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Outcome {
    /// `None`: every order was checked.
    since: Option<DateTime<Utc>>,
    orders_checked: usize,
    already_in_stream: usize,
    republished: usize,
    forgotten_slots: Vec<String>,
    kept_slots: Vec<String>,
}

pub async fn run(args: &ResyncArgs) -> anyhow::Result<bool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&args.database_url)
        .await
        .context("connecting to order-service's database")?;
    let names = Names::new(&args.events_prefix)?;
    let (js, mut stream) = crate::stream::open(&args.nats_url, &names).await?;

    let margin = chrono::Duration::from_std(args.margin)?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let published = in_stream_since(&mut stream, &names, since.map(|since| since - margin)).await?;

    let mut outcome = Outcome {
        since,
        orders_checked: 0,
        already_in_stream: 0,
        republished: 0,
        forgotten_slots: Vec::new(),
        kept_slots: Vec::new(),
    };
    let mut after = None;
    loop {
        let mut conn = pool.acquire().await?;
        let orders = replay::created_since(&mut conn, since, after, PAGE).await?;
        drop(conn);
        let Some(last) = orders.last() else { break };
        after = Some((last.created_at, last.id));
        outcome.orders_checked += orders.len();
        let mut missing = Vec::new();
        for order in orders {
            if published.contains(&order.id) {
                outcome.already_in_stream += 1;
            } else {
                missing.push(order.placed_event());
            }
        }
        outcome.republished +=
            shared_events::jetstream::republish_orders(&js, &names, missing).await?;
    }
    forget_unusable_slots(&pool, &mut outcome).await?;
    report(&outcome, args.json)?;
    Ok(true)
}

/// An RFC 3339 time. A position in the WAL (`0/16B3748`) cannot be mapped to
/// orders — PostgreSQL keeps no commit position per row — so it is refused
/// with that explanation.
fn parse_since(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Some((high, low)) = text.split_once('/')
        && [high, low]
            .iter()
            .all(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
    {
        bail!(
            "--since {text}: a WAL position cannot be mapped to orders (PostgreSQL keeps no \
             commit position per row); give the time it was confirmed at (RFC 3339), or leave \
             --since out to check every order"
        );
    }
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("--since {text:?} is not an RFC 3339 time"))?
        .with_timezone(&Utc))
}

/// The orders whose `OrderPlaced` the stream holds, stored at or after
/// `from` (by the broker's clock), or all of them.
async fn in_stream_since(
    stream: &mut async_nats::jetstream::stream::Stream,
    names: &Names,
    from: Option<DateTime<Utc>>,
) -> anyhow::Result<HashSet<Uuid>> {
    let deliver_policy = match from {
        Some(from) => {
            let nanos = from.timestamp_nanos_opt().unwrap_or(0).max(0);
            let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))?;
            DeliverPolicy::ByStartTime { start_time }
        }
        None => DeliverPolicy::All,
    };
    let placed = crate::stream::placed_events(stream, names, deliver_policy).await?;
    Ok(placed.into_keys().collect())
}

/// Forgets every remembered slot that is not as order-service left it (gone,
/// from another server, recreated or moved by someone else: see
/// [`slot::mismatch`]), and drops and forgets a lost one; keeps intact and
/// drained ones. A slot forgotten but kept is adopted at the next start, at
/// the position it stands at, which is before this run's re-publishing.
async fn forget_unusable_slots(pool: &PgPool, outcome: &mut Outcome) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    for name in cdc_slots::all(&mut conn)
        .await?
        .into_iter()
        .map(|r| r.slot_name)
    {
        let (status, Some(remembered)) = slot::found_then_remembered(pool, &name).await? else {
            continue;
        };
        let lost = status
            .as_ref()
            .is_some_and(|s| s.wal_status.as_deref() == Some("lost"));
        let unusable = remembered.drained_at.is_none()
            && slot::mismatch(&remembered, status.as_ref()).is_some();
        if !unusable {
            outcome.kept_slots.push(name);
            continue;
        }
        if lost {
            slot::drop_slot(
                pool,
                &name,
                tokio::time::Instant::now() + Duration::from_secs(10),
            )
            .await?;
        }
        cdc_slots::forget(&mut conn, &name).await?;
        outcome.forgotten_slots.push(name);
    }
    Ok(())
}

fn report(outcome: &Outcome, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(outcome)?);
        return Ok(());
    }
    match outcome.since {
        Some(since) => println!("orders created since {since}: {}", outcome.orders_checked),
        None => println!("orders: {}", outcome.orders_checked),
    }
    println!("  already in the stream: {}", outcome.already_in_stream);
    println!("  re-published:          {}", outcome.republished);
    for name in &outcome.forgotten_slots {
        println!(
            "forgot replication slot {name}: order-service creates a new one at its next start"
        );
    }
    for name in &outcome.kept_slots {
        println!("kept replication slot {name}: it is intact");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_an_rfc_3339_time() {
        let since = parse_since("2026-11-27T10:00:00+01:00").unwrap();
        assert_eq!(since.to_rfc3339(), "2026-11-27T09:00:00+00:00");
    }

    #[test]
    fn since_refuses_a_wal_position_and_says_why() {
        let error = parse_since("0/16B3748").unwrap_err().to_string();
        assert!(error.contains("cannot be mapped to orders"), "{error}");
        assert!(parse_since("yesterday").is_err());
    }
}
