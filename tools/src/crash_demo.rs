//! The crash that tells the patterns from the control, once per mode.
//!
//! Each mode places one order with its crash point armed where a naive
//! service loses the event: after the order's COMMIT and before any publish
//! (`after_commit_before_publish`), or, in self-read, whose order is the
//! event, after the PubAck and before the answer (`self_read_after_publish`).
//! order-service dies before answering; it is started again; the client,
//! having heard nothing, sends the order again with its `Idempotency-Key`,
//! as a client should. Then the demo waits for the credit, and reports what
//! the client was told, what was stored and what was credited.
//!
//! The outcome does not depend on timing: the crash point is hit by the one
//! order, every time.

use std::fmt::Write as _;

use harness::api::{count, credits, order, place_order};
use harness::wait::within;
use harness::{CONVERGE, CrashPoint, Mode, TestEnv};

/// What happened to the one order of a mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub mode: Mode,
    /// The answers the client got: to the first request, and to the retry.
    pub told: String,
    /// Orders in order-service's database.
    pub stored: i64,
    /// Credits in rewards-service's ledger.
    pub credited: i64,
    pub why: &'static str,
}

/// Runs every mode at once; the outcomes in [`Mode::ALL`]'s order.
pub async fn run() -> Vec<Outcome> {
    futures::future::join_all(Mode::ALL.map(one)).await
}

async fn one(mode: Mode) -> Outcome {
    let env = TestEnv::new(&format!("crash_demo_{}", mode.name().replace('-', "_"))).await;
    let _rewards = env.rewards_service().start().await;
    let point = if mode == Mode::SelfRead {
        CrashPoint::SelfReadAfterPublish
    } else {
        CrashPoint::AfterCommitBeforePublish
    };
    let mut orders = env.order_service(mode).crash_at(point).start().await;
    let body = order("dana", &[("BOOK-42", 2, 1250)]);
    let key = "dana-order-1";

    let first = match place_order(&env.http, orders.url(), &body, Some(key)).await {
        Ok(response) => response.status().to_string(),
        Err(_) => "no answer (the process died)".to_owned(),
    };
    orders.assert_crashed().await;
    let restarted = env.order_service(mode).start().await;
    let retry = match place_order(&env.http, restarted.url(), &body, Some(key)).await {
        Ok(response) => format!(
            "{}{}",
            response.status().as_u16(),
            if response.headers().contains_key("idempotent-replayed") {
                " replayed"
            } else {
                ""
            }
        ),
        Err(error) => format!("error: {error}"),
    };

    let rewards = env.rewards_db().await;
    let credited = within(CONVERGE, || async {
        let credits = credits(&rewards).await;
        if credits > 0 {
            return Some(credits);
        }
        // The control publishes on the request path only: once the retry
        // is answered and the stream holds nothing, nothing ever will.
        (mode == Mode::DualWrite && env.stream_messages().await == 0).then_some(0)
    })
    .await
    .unwrap_or(0);
    // Self-read's order is written by its projector, from the event.
    let orders_db = env.orders_db().await;
    let stored = within(CONVERGE, || async {
        let orders = count(&orders_db, "orders").await;
        (orders > 0).then_some(orders)
    })
    .await
    .unwrap_or(0);
    Outcome {
        mode,
        told: format!("{first}; retry: {retry}"),
        stored,
        credited,
        why: why(mode),
    }
}

fn why(mode: Mode) -> &'static str {
    match mode {
        Mode::Outbox => {
            "the event was committed with the order, in the outbox; the restarted relay published it"
        }
        Mode::OutboxCdc => {
            "the event's outbox insert was in the WAL with the order; the restarted reader published it"
        }
        Mode::Cdc => {
            "the order's insert is the event: the restarted reader read it from the WAL and published it"
        }
        Mode::SelfRead => {
            "the event was in the stream before the crash; the retry met it as a duplicate, and the projector wrote the order from it"
        }
        Mode::DualWrite => {
            "LOST: the order was committed, the publish never happened, and nothing will ever publish it (the retry only finds the stored order)"
        }
    }
}

/// The outcomes as a table.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<11} {:<50} {:>6} {:>8}  why",
        "mode", "the client was told", "stored", "credited"
    );
    for outcome in outcomes {
        let _ = writeln!(
            text,
            "{:<11} {:<50} {:>6} {:>8}  {}",
            outcome.mode.name(),
            outcome.told,
            outcome.stored,
            outcome.credited,
            outcome.why
        );
    }
    text
}
