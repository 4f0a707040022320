//! A batch with cancellations: what the ledger holds of the batch's orders
//! is read (stable, under [`lock_orders`](super::lock_orders)), what to
//! write is decided here, and written in one statement — so that the
//! balances, as in [`credit_all`](super::credit_all), are updated once, in
//! customer order.
//!
//! Per order, the batch applies as if its credits came first: a credit
//! applies the cancellation awaiting it, then a cancellation reverses the
//! credit if there is one, or is recorded to await it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use service_kit::failure::Refused;
use sqlx::PgConnection;
use uuid::Uuid;

use super::credits::sequence;
use crate::domain::{Change, Credit, Reversal};

/// An order's credit as the ledger holds it (or as this batch writes it).
#[derive(Debug, Clone)]
struct Credited {
    customer_id: String,
    points: i64,
    order_total_minor: i64,
    currency: String,
    order_placed_at: DateTime<Utc>,
}

impl From<&Credit> for Credited {
    fn from(credit: &Credit) -> Self {
        Self {
            customer_id: credit.customer_id.clone(),
            points: credit.points,
            order_total_minor: credit.order_total_minor,
            currency: credit.currency.code().to_owned(),
            order_placed_at: credit.order_placed_at,
        }
    }
}

/// A cancellation recorded before its order's credit.
#[derive(Debug, Clone)]
struct Awaiting {
    event_id: Uuid,
    customer_id: String,
    order_total_minor: i64,
    currency: String,
    stream_sequence: i64,
}

/// What the ledger holds of one event's order.
struct Known {
    /// The event's id is in the ledger (under any order).
    seen: bool,
    credit: Option<Credited>,
    reversed: bool,
    awaiting: Option<Awaiting>,
}

/// A ledger row to write.
struct Entry {
    event_id: Uuid,
    order_id: Uuid,
    kind: &'static str,
    credited: Credited,
    stream_sequence: i64,
}

/// The rows one statement writes.
#[derive(Default)]
struct Writes {
    entries: Vec<Entry>,
    /// Orders whose awaiting cancellation is applied now.
    applied: Vec<Uuid>,
    /// Cancellations to record as awaiting their credit.
    recorded: Vec<(Reversal, i64)>,
}

impl Writes {
    fn credit(&mut self, event_id: Uuid, order_id: Uuid, credited: &Credited, sequence: i64) {
        self.entries.push(Entry {
            event_id,
            order_id,
            kind: "credit",
            credited: credited.clone(),
            stream_sequence: sequence,
        });
    }

    /// The reversal of `credited`, by the event `event_id`: it takes back
    /// exactly the points the credit holds.
    fn reversal(&mut self, event_id: Uuid, order_id: Uuid, credited: &Credited, sequence: i64) {
        self.entries.push(Entry {
            event_id,
            order_id,
            kind: "reversal",
            credited: Credited {
                points: -credited.points,
                ..credited.clone()
            },
            stream_sequence: sequence,
        });
    }
}

/// Applies a batch of credits and cancellations in the caller's
/// transaction, after [`lock_orders`](super::lock_orders) on all their
/// orders; returns, per change, whether it was new. A cancellation that
/// names another customer, total or currency than its order's credit is a
/// [`Refused`] error: nothing is written.
pub async fn apply_changes(
    conn: &mut PgConnection,
    changes: &[(Change, u64)],
) -> anyhow::Result<Vec<bool>> {
    let known = read(conn, changes).await?;
    let (writes, new) = plan(changes, known)?;
    write(conn, writes).await?;
    Ok(new)
}

/// Decides what the batch writes, credits first, then cancellations.
fn plan(changes: &[(Change, u64)], known: Vec<Known>) -> anyhow::Result<(Writes, Vec<bool>)> {
    let mut new = vec![false; changes.len()];
    let mut writes = Writes::default();
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut credited: HashMap<Uuid, Credited> = HashMap::new();
    let mut reversed: HashSet<Uuid> = HashSet::new();
    let mut awaiting: HashMap<Uuid, Option<Awaiting>> = HashMap::new();
    for (known, (change, _)) in known.iter().zip(changes) {
        let order = change.order_id();
        if let Some(credit) = &known.credit {
            credited.insert(order, credit.clone());
        }
        if known.reversed {
            reversed.insert(order);
        }
        awaiting.insert(order, known.awaiting.clone());
    }
    let numbered = || changes.iter().zip(&known).enumerate();
    for (i, ((change, stream_sequence), known)) in numbered() {
        let Change::Credit(credit) = change else {
            continue;
        };
        if known.seen || credited.contains_key(&credit.order_id) || !seen.insert(credit.event_id) {
            continue;
        }
        new[i] = true;
        let credit_row = Credited::from(credit);
        writes.credit(
            credit.event_id,
            credit.order_id,
            &credit_row,
            sequence(*stream_sequence),
        );
        // The cancellation that came first is applied with its credit, if
        // it is of this order as credited; otherwise it stays recorded.
        if let Some(Some(waiting)) = awaiting.get(&credit.order_id)
            && !reversed.contains(&credit.order_id)
            && waiting.customer_id == credit_row.customer_id
            && waiting.order_total_minor == credit_row.order_total_minor
            && waiting.currency == credit_row.currency
        {
            writes.reversal(
                waiting.event_id,
                credit.order_id,
                &credit_row,
                waiting.stream_sequence,
            );
            writes.applied.push(credit.order_id);
            reversed.insert(credit.order_id);
        }
        credited.insert(credit.order_id, credit_row);
    }
    for (i, ((change, stream_sequence), known)) in numbered() {
        let Change::Reversal(reversal) = change else {
            continue;
        };
        let order = reversal.order_id;
        if known.seen || reversed.contains(&order) || seen.contains(&reversal.event_id) {
            continue;
        }
        if let Some(credit) = credited.get(&order) {
            if let Some(reason) = reversal.disagreement(
                &credit.customer_id,
                credit.order_total_minor,
                &credit.currency,
            ) {
                return Err(Refused(reason).into());
            }
            writes.reversal(reversal.event_id, order, credit, sequence(*stream_sequence));
            reversed.insert(order);
        } else if matches!(awaiting.get(&order), Some(Some(_))) {
            continue;
        } else {
            writes
                .recorded
                .push((reversal.clone(), sequence(*stream_sequence)));
            awaiting.insert(
                order,
                Some(Awaiting {
                    event_id: reversal.event_id,
                    customer_id: reversal.customer_id.clone(),
                    order_total_minor: reversal.order_total_minor,
                    currency: reversal.currency.code().to_owned(),
                    stream_sequence: sequence(*stream_sequence),
                }),
            );
        }
        seen.insert(reversal.event_id);
        new[i] = true;
    }
    Ok((writes, new))
}

/// What the ledger and the awaiting cancellations hold of each change's
/// order, in the order of `changes`.
async fn read(conn: &mut PgConnection, changes: &[(Change, u64)]) -> sqlx::Result<Vec<Known>> {
    let orders: Vec<Uuid> = changes.iter().map(|(c, _)| c.order_id()).collect();
    let events: Vec<Uuid> = changes
        .iter()
        .map(|(c, _)| match c {
            Change::Credit(credit) => credit.event_id,
            Change::Reversal(reversal) => reversal.event_id,
        })
        .collect();
    let rows = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM reward_ledger s WHERE s.event_id = i.event_id) AS "seen!",
                  c.customer_id AS "credit_customer?", c.points AS "credit_points?",
                  c.order_total_minor AS "credit_total?", c.currency AS "credit_currency?",
                  c.order_placed_at AS "credit_placed_at?",
                  EXISTS (SELECT 1 FROM reward_ledger r
                          WHERE r.order_id = i.order_id AND r.kind = 'reversal') AS "reversed!",
                  w.event_id AS "awaiting_event?", w.customer_id AS "awaiting_customer?",
                  w.order_total_minor AS "awaiting_total?", w.currency AS "awaiting_currency?",
                  w.stream_sequence AS "awaiting_sequence?"
           FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS i(order_id, event_id, n)
           LEFT JOIN reward_ledger c ON c.order_id = i.order_id AND c.kind = 'credit'
           LEFT JOIN reversals_awaiting_credit w ON w.order_id = i.order_id
           ORDER BY i.n"#,
        &orders,
        &events,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Known {
            seen: row.seen,
            credit: match (
                row.credit_customer,
                row.credit_points,
                row.credit_total,
                row.credit_currency,
                row.credit_placed_at,
            ) {
                (Some(customer_id), Some(points), Some(total), Some(currency), Some(placed)) => {
                    Some(Credited {
                        customer_id,
                        points,
                        order_total_minor: total,
                        currency,
                        order_placed_at: placed,
                    })
                }
                _ => None,
            },
            reversed: row.reversed,
            awaiting: match (
                row.awaiting_event,
                row.awaiting_customer,
                row.awaiting_total,
                row.awaiting_currency,
                row.awaiting_sequence,
            ) {
                (
                    Some(event_id),
                    Some(customer_id),
                    Some(total),
                    Some(currency),
                    Some(sequence),
                ) => Some(Awaiting {
                    event_id,
                    customer_id,
                    order_total_minor: total,
                    currency,
                    stream_sequence: sequence,
                }),
                _ => None,
            },
        })
        .collect())
}

/// Writes the ledger rows, the awaiting cancellations applied and
/// recorded, and the balances (once per customer, in customer order). No
/// key is expected to conflict under the lock: one that does fails the
/// batch rather than write half of it.
async fn write(conn: &mut PgConnection, writes: Writes) -> sqlx::Result<()> {
    if writes.entries.is_empty() && writes.recorded.is_empty() {
        return Ok(());
    }
    let entries = &writes.entries;
    let recorded = &writes.recorded;
    let event_ids: Vec<Uuid> = entries.iter().map(|e| e.event_id).collect();
    let order_ids: Vec<Uuid> = entries.iter().map(|e| e.order_id).collect();
    let kinds: Vec<String> = entries.iter().map(|e| e.kind.to_owned()).collect();
    let customers: Vec<String> = entries
        .iter()
        .map(|e| e.credited.customer_id.clone())
        .collect();
    let points: Vec<i64> = entries.iter().map(|e| e.credited.points).collect();
    let totals: Vec<i64> = entries
        .iter()
        .map(|e| e.credited.order_total_minor)
        .collect();
    let currencies: Vec<String> = entries
        .iter()
        .map(|e| e.credited.currency.clone())
        .collect();
    let placed: Vec<DateTime<Utc>> = entries.iter().map(|e| e.credited.order_placed_at).collect();
    let sequences: Vec<i64> = entries.iter().map(|e| e.stream_sequence).collect();
    let r_orders: Vec<Uuid> = recorded.iter().map(|(r, _)| r.order_id).collect();
    let r_events: Vec<Uuid> = recorded.iter().map(|(r, _)| r.event_id).collect();
    let r_customers: Vec<String> = recorded
        .iter()
        .map(|(r, _)| r.customer_id.clone())
        .collect();
    let r_points: Vec<i64> = recorded.iter().map(|(r, _)| r.points).collect();
    let r_totals: Vec<i64> = recorded.iter().map(|(r, _)| r.order_total_minor).collect();
    let r_currencies: Vec<String> = recorded
        .iter()
        .map(|(r, _)| r.currency.code().to_owned())
        .collect();
    let r_cancelled: Vec<DateTime<Utc>> = recorded.iter().map(|(r, _)| r.cancelled_at).collect();
    let r_sequences: Vec<i64> = recorded.iter().map(|(_, s)| *s).collect();
    // A new account only ever gains (a reversal follows its credit), so the
    // row proposed for one is never negative; an existing one takes its
    // customer's sum, which may be.
    sqlx::query!(
        r#"WITH entries AS (
               INSERT INTO reward_ledger
                   (event_id, order_id, kind, customer_id, points, order_total_minor, currency,
                    order_placed_at, stream_sequence)
               SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[],
                                    $6::bigint[], $7::text[], $8::timestamptz[], $9::bigint[])
               RETURNING customer_id, points
           ), applied AS (
               DELETE FROM reversals_awaiting_credit WHERE order_id = ANY($10::uuid[])
           ), recorded AS (
               INSERT INTO reversals_awaiting_credit
                   (order_id, event_id, customer_id, points, order_total_minor, currency,
                    cancelled_at, stream_sequence)
               SELECT * FROM UNNEST($11::uuid[], $12::uuid[], $13::text[], $14::bigint[],
                                    $15::bigint[], $16::text[], $17::timestamptz[], $18::bigint[])
           ), deltas AS (
               SELECT customer_id, sum(points)::bigint AS delta FROM entries GROUP BY customer_id
           )
           INSERT INTO reward_accounts (customer_id, balance)
           SELECT customer_id, greatest(delta, 0) FROM deltas ORDER BY customer_id
           ON CONFLICT (customer_id)
           DO UPDATE SET balance = reward_accounts.balance
                             + (SELECT d.delta FROM deltas d WHERE d.customer_id = EXCLUDED.customer_id),
                         updated_at = now()"#,
        &event_ids,
        &order_ids,
        &kinds,
        &customers,
        &points,
        &totals,
        &currencies,
        &placed,
        &sequences,
        &writes.applied,
        &r_orders,
        &r_events,
        &r_customers,
        &r_points,
        &r_totals,
        &r_currencies,
        &r_cancelled,
        &r_sequences,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
