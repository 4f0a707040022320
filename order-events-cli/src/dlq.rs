//! `order-events dlq list` and `order-events dlq redrive`: what the consumers
//! dead-lettered, and sending it back once the cause is fixed.
//!
//! A consumer dead-letters an event it can never apply (a bad payload, a
//! value its database cannot store, too many failed deliveries) with the
//! reason in headers, so that one poison message never blocks the others.
//! Redriving republishes an event unchanged to its original subject, where
//! every consumer sees it again — idempotently: each applies an event id
//! once, so the consumers that had applied it find a duplicate. The publish
//! uses a message id of its own (the broker's duplicate window still holds
//! the original id), and the dead letter is deleted only after the PubAck.
//!
//! A letter of the self-read projector (its consumer header names the
//! projector's durable) is not republished: it is applied to the order
//! history with the projector's own transaction, in order-service's database
//! (`--orders-database-url`), and deleted after COMMIT. Republishing would
//! reach only the consumers that exist, and leaving self-read deletes the
//! projector's: an order whose projection was dead-lettered would never
//! reach the history, while every credit is kept (and the audit would find
//! a credit without an order). Applied directly, the letter lands whatever
//! mode order-service runs by then, idempotently (the projector's inbox and
//! order key), and a redrive never double-credits, since the rewards
//! consumer is not sent the event again. The projector could not instead
//! be kept from dead-lettering what a retry would apply: a failure it cannot
//! classify (a missing column after a bad deployment, say) is dead-lettered
//! after `CONSUMER_MAX_DELIVER` and does apply once fixed.

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use order_service::patterns::self_read::projector;
use serde::Serialize;
use shared_events::jetstream::dead_letter_headers;
use shared_events::{ID_NAMESPACE, Names, OrderEvent};
use sqlx::PgPool;
use uuid::Uuid;

use crate::DlqArgs;

/// One dead-lettered message.
#[derive(Debug, Serialize)]
struct DeadLetter {
    /// Sequence in the dead-letter stream: what `redrive --id` takes.
    id: u64,
    consumer: String,
    reason: String,
    original_subject: String,
    original_sequence: String,
    /// The event's id, when the payload is an event at all.
    event_id: Option<String>,
    #[serde(skip)]
    payload: Vec<u8>,
}

/// Prints the dead letters.
pub async fn list(args: &DlqArgs, json: bool) -> anyhow::Result<bool> {
    let (_, stream) = open(args).await?;
    let letters = read_all(&stream).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
    } else if letters.is_empty() {
        println!("no dead letters");
    } else {
        println!(
            "{:>6}  {:<24}  {:<38}  reason",
            "id", "consumer", "event id"
        );
        for letter in &letters {
            println!(
                "{:>6}  {:<24}  {:<38}  {}",
                letter.id,
                letter.consumer,
                letter.event_id.as_deref().unwrap_or("-"),
                letter.reason
            );
        }
    }
    Ok(true)
}

/// Republishes every dead letter (or the one with `id`) to its original
/// subject — or applies a projector's letter to the order history — then
/// deletes it from the dead-letter stream.
pub async fn redrive(args: &DlqArgs, id: Option<u64>) -> anyhow::Result<bool> {
    let (js, stream) = open(args).await?;
    let mut letters = read_all(&stream).await?;
    if let Some(id) = id {
        letters.retain(|l| l.id == id);
        if letters.is_empty() {
            bail!("no dead letter with id {id} (see `order-events dlq list`)");
        }
    }
    // Only events can go back: a letter whose payload is no event of an
    // order (change capture's "orders without lines", say) would only be
    // dead-lettered again. Orders behind those are recovered from the
    // database with `order-events cdc resync --since`.
    let (letters, skipped): (Vec<_>, Vec<_>) = letters
        .into_iter()
        .partition(|l| OrderEvent::decode(&l.payload).is_ok());
    for letter in &skipped {
        eprintln!(
            "skipped {}: not an order's event ({}); for orders dead-lettered by change \
             capture, run `order-events cdc resync --since <time>`",
            letter.id, letter.reason
        );
    }
    if id.is_some() && !skipped.is_empty() {
        bail!("dead letter {} cannot be redriven", skipped[0].id);
    }
    let order_history = order_history(args, &letters).await?;
    let dead_letter_stream = stream.cached_info().config.name.clone();
    for letter in &letters {
        if let (Some(pool), true) = (&order_history, letter.consumer == Names::PROJECTOR_CONSUMER) {
            project(pool, letter).await?;
            stream
                .delete_message(letter.id)
                .await
                .with_context(|| format!("deleting redriven dead letter {}", letter.id))?;
            eprintln!(
                "applied {} ({}) to the order history",
                letter.id,
                letter.event_id.as_deref().unwrap_or("not an event")
            );
            continue;
        }
        if letter.original_subject.is_empty() {
            bail!("dead letter {} names no original subject", letter.id);
        }
        let message_id = Uuid::new_v5(
            &ID_NAMESPACE,
            format!("redrive:{dead_letter_stream}:{}", letter.id).as_bytes(),
        );
        shared_events::jetstream::publish(
            &js,
            letter.original_subject.clone(),
            message_id,
            None,
            letter.payload.clone(),
        )
        .await
        .with_context(|| format!("republishing dead letter {}", letter.id))?;
        stream
            .delete_message(letter.id)
            .await
            .with_context(|| format!("deleting redriven dead letter {}", letter.id))?;
        eprintln!(
            "redrove {} ({}) to {}",
            letter.id,
            letter.event_id.as_deref().unwrap_or("not an event"),
            letter.original_subject
        );
    }
    println!("redriven: {}", letters.len());
    Ok(true)
}

/// order-service's database, when a letter of the projector is to be
/// redriven: checked before any letter is, so that none is half done.
async fn order_history(args: &DlqArgs, letters: &[DeadLetter]) -> anyhow::Result<Option<PgPool>> {
    let Some(first) = letters
        .iter()
        .find(|l| l.consumer == Names::PROJECTOR_CONSUMER)
    else {
        return Ok(None);
    };
    let Some(url) = &args.orders_database_url else {
        bail!(
            "dead letter {} comes from the self-read projector ({}), which \
             is redriven into order-service's database: set ORDERS_DATABASE_URL (or pass \
             --orders-database-url)",
            first.id,
            Names::PROJECTOR_CONSUMER,
        );
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .context("connecting to order-service's database (ORDERS_DATABASE_URL)")?;
    Ok(Some(pool))
}

/// Applies a projector's letter to the order history, as the projector would.
async fn project(pool: &PgPool, letter: &DeadLetter) -> anyhow::Result<()> {
    let event = OrderEvent::decode(&letter.payload)
        .with_context(|| format!("decoding dead letter {}", letter.id))?;
    projector::project(pool, vec![event])
        .await
        .with_context(|| format!("applying dead letter {} to the order history", letter.id))?;
    Ok(())
}

async fn open(args: &DlqArgs) -> anyhow::Result<(jetstream::Context, Stream)> {
    let names = Names::new(&args.events_prefix).context("EVENTS_PREFIX")?;
    let client = service_kit::startup::connect_nats_once(&args.nats_url, "order-events").await?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(names.dead_letter_stream())
        .await
        .with_context(|| format!("opening stream {}", names.dead_letter_stream()))?;
    Ok((js, stream))
}

async fn read_all(stream: &Stream) -> anyhow::Result<Vec<DeadLetter>> {
    let state = stream
        .get_info()
        .await
        .context("reading the dead-letter stream")?
        .state;
    let mut letters = Vec::new();
    if state.messages == 0 {
        return Ok(letters);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let message = match stream.get_raw_message(sequence).await {
            Ok(message) => message,
            // A gap: a letter redriven (deleted) before.
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("reading dead letter {sequence}"));
            }
        };
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let event_id = serde_json::from_slice::<serde_json::Value>(&message.payload)
            .ok()
            .and_then(|v| {
                v.get("event_id")
                    .and_then(|id| id.as_str())
                    .map(str::to_owned)
            });
        letters.push(DeadLetter {
            id: sequence,
            consumer: header(dead_letter_headers::CONSUMER),
            reason: header(dead_letter_headers::REASON),
            original_subject: header(dead_letter_headers::SUBJECT),
            original_sequence: header(dead_letter_headers::STREAM_SEQUENCE),
            event_id,
            payload: message.payload.to_vec(),
        });
    }
    Ok(letters)
}
