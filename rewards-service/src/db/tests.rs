//! The ledger against real PostgreSQL: credits, reversals, their keys, and
//! two transactions applying one order's events at once.

use std::time::Duration;

use chrono::Utc;
use service_kit::failure::{Failure, classify};
use shared_events::Currency;
use sqlx::PgPool;
use uuid::Uuid;

use super::*;
use crate::domain::{Change, Credit, Reversal};

fn credit(customer: &str, points: i64) -> Credit {
    Credit {
        event_id: Uuid::now_v7(),
        order_id: Uuid::now_v7(),
        customer_id: customer.to_owned(),
        points,
        order_total_minor: points * 100,
        currency: Currency::from_code("EUR").expect("a known currency"),
        order_placed_at: Utc::now(),
    }
}

/// The cancellation of `credit`'s order, as order-service would publish it.
fn cancellation(credit: &Credit) -> Reversal {
    Reversal {
        event_id: shared_events::cancelled_event_id(credit.order_id),
        order_id: credit.order_id,
        customer_id: credit.customer_id.clone(),
        points: credit.points,
        order_total_minor: credit.order_total_minor,
        currency: credit.currency,
        cancelled_at: Utc::now(),
    }
}

/// The same cancellation under another event id (a second publisher).
fn under_another_id(reversal: &Reversal) -> Reversal {
    Reversal {
        event_id: Uuid::now_v7(),
        ..reversal.clone()
    }
}

/// Applies `changes` as one batch in one transaction, numbered like
/// stream sequences.
async fn apply_all(pool: &PgPool, changes: &[Change]) -> anyhow::Result<Vec<bool>> {
    let numbered: Vec<(Change, u64)> = changes.iter().cloned().zip(1..).collect();
    let mut tx = pool.begin().await?;
    let new = apply(&mut tx, &numbered).await?;
    tx.commit().await?;
    Ok(new)
}

async fn credits(pool: &PgPool, credits: &[Credit]) -> anyhow::Result<Vec<bool>> {
    let changes: Vec<Change> = credits.iter().cloned().map(Change::Credit).collect();
    apply_all(pool, &changes).await
}

async fn ledger_rows(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM reward_ledger")
        .fetch_one(pool)
        .await
}

/// Every balance next to the sum of its ledger's points, an independent truth.
async fn balances(pool: &PgPool) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as(
        "SELECT a.customer_id, a.balance, sum(l.points)::bigint
         FROM reward_accounts a JOIN reward_ledger l USING (customer_id)
         GROUP BY a.customer_id, a.balance ORDER BY a.customer_id",
    )
    .fetch_all(pool)
    .await
}

/// An order's ledger entries: kind and points, the credit first.
async fn entries(pool: &PgPool, order_id: Uuid) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT kind, points FROM reward_ledger WHERE order_id = $1 ORDER BY kind")
        .bind(order_id)
        .fetch_all(pool)
        .await
}

async fn awaiting(pool: &PgPool) -> sqlx::Result<i64> {
    awaiting_credit(&mut *pool.acquire().await?).await
}

fn owned(entries: &[(&str, i64)]) -> Vec<(String, i64)> {
    entries.iter().map(|(k, p)| ((*k).to_owned(), *p)).collect()
}

#[sqlx::test]
async fn new_credits_write_the_ledger_and_add_to_the_balances(pool: PgPool) -> anyhow::Result<()> {
    let batch = [credit("ivy", 10), credit("jon", 7), credit("ivy", 5)];
    assert_eq!(credits(&pool, &batch).await?, [true, true, true]);
    assert_eq!(ledger_rows(&pool).await?, 3);
    assert_eq!(
        balances(&pool).await?,
        [("ivy".to_owned(), 15, 15), ("jon".to_owned(), 7, 7)]
    );
    let mut conn = pool.acquire().await?;
    assert_eq!(balance(&mut conn, "ivy").await?, Some(15));
    assert_eq!(balance(&mut conn, "kim").await?, None);
    let entries = ledger(&mut conn, "ivy", 10).await?;
    let mut orders: Vec<Uuid> = entries.iter().map(|e| e.order_id).collect();
    orders.sort();
    let mut expected = [batch[0].order_id, batch[2].order_id];
    expected.sort();
    assert_eq!(orders, expected);
    assert!(entries.iter().all(|e| e.kind == EntryKind::Credit));
    Ok(())
}

#[sqlx::test]
async fn a_redelivered_event_is_credited_once(pool: PgPool) -> anyhow::Result<()> {
    let first = credit("ivy", 10);
    assert_eq!(credits(&pool, std::slice::from_ref(&first)).await?, [true]);
    let mut same_event = credit("ivy", 10);
    same_event.event_id = first.event_id;
    let other = credit("ivy", 3);
    assert_eq!(credits(&pool, &[same_event, other]).await?, [false, true]);
    assert_eq!(ledger_rows(&pool).await?, 2);
    assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 13, 13)]);
    Ok(())
}

#[sqlx::test]
async fn an_order_replayed_under_a_new_event_id_is_credited_once(
    pool: PgPool,
) -> anyhow::Result<()> {
    let first = credit("ivy", 10);
    assert_eq!(credits(&pool, std::slice::from_ref(&first)).await?, [true]);
    let mut replay = credit("ivy", 10);
    replay.order_id = first.order_id;
    assert_eq!(credits(&pool, &[replay]).await?, [false]);
    assert_eq!(ledger_rows(&pool).await?, 1);
    assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 10, 10)]);
    Ok(())
}

#[sqlx::test]
async fn an_order_twice_in_one_batch_is_credited_once(pool: PgPool) -> anyhow::Result<()> {
    let first = credit("ivy", 10);
    let mut again = credit("ivy", 10);
    again.order_id = first.order_id;
    assert_eq!(credits(&pool, &[first, again]).await?, [true, false]);
    assert_eq!(ledger_rows(&pool).await?, 1);
    assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 10, 10)]);
    Ok(())
}

#[sqlx::test]
async fn a_cancellation_after_its_credit_reverses_exactly_the_credited_points_once(
    pool: PgPool,
) -> anyhow::Result<()> {
    let kept = credit("ivy", 10);
    let cancelled = credit("ivy", 25);
    assert_eq!(
        credits(&pool, &[kept, cancelled.clone()]).await?,
        [true, true]
    );
    // The ledger's credit holds 24, not the 25 the rule gives the order's
    // total: the reversal takes back what was credited, not a recomputation.
    sqlx::query("UPDATE reward_ledger SET points = 24 WHERE order_id = $1")
        .bind(cancelled.order_id)
        .execute(&pool)
        .await?;
    sqlx::query("UPDATE reward_accounts SET balance = balance - 1")
        .execute(&pool)
        .await?;

    let reversal = cancellation(&cancelled);
    let cancel = Change::Reversal(reversal.clone());
    assert_eq!(
        apply_all(&pool, std::slice::from_ref(&cancel)).await?,
        [true]
    );
    let netted = owned(&[("credit", 24), ("reversal", -24)]);
    assert_eq!(entries(&pool, cancelled.order_id).await?, netted);
    assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 10, 10)]);

    // Redelivered, then published again under another event id, alone and
    // beside a new credit: never reversed twice.
    assert_eq!(apply_all(&pool, &[cancel]).await?, [false]);
    let again = Change::Reversal(under_another_id(&reversal));
    assert_eq!(
        apply_all(&pool, std::slice::from_ref(&again)).await?,
        [false]
    );
    let more = credit("ivy", 3);
    assert_eq!(
        apply_all(&pool, &[again, Change::Credit(more)]).await?,
        [false, true]
    );
    assert_eq!(entries(&pool, cancelled.order_id).await?, netted);
    assert_eq!(ledger_rows(&pool).await?, 4);
    assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 13, 13)]);
    assert_eq!(awaiting(&pool).await?, 0);
    Ok(())
}

#[sqlx::test]
async fn a_cancellation_before_its_credit_waits_and_the_credit_nets_to_zero(
    pool: PgPool,
) -> anyhow::Result<()> {
    let placed = credit("ivy", 25);
    let reversal = cancellation(&placed);
    let cancel = Change::Reversal(reversal.clone());
    assert_eq!(
        apply_all(&pool, std::slice::from_ref(&cancel)).await?,
        [true]
    );
    // Recorded, and nothing else: no reversal of nothing, no balance.
    assert_eq!(awaiting(&pool).await?, 1);
    assert_eq!(ledger_rows(&pool).await?, 0);
    assert_eq!(balance(&mut *pool.acquire().await?, "ivy").await?, None);
    // Redelivered, and under another event id: still one waits.
    assert_eq!(
        apply_all(&pool, std::slice::from_ref(&cancel)).await?,
        [false]
    );
    let again = Change::Reversal(under_another_id(&reversal));
    assert_eq!(apply_all(&pool, &[again]).await?, [false]);
    assert_eq!(awaiting(&pool).await?, 1);

    // The credit comes, beside another: both rows, the balance net of them.
    let kept = credit("ivy", 10);
    assert_eq!(credits(&pool, &[placed.clone(), kept]).await?, [true, true]);
    assert_eq!(
        entries(&pool, placed.order_id).await?,
        owned(&[("credit", 25), ("reversal", -25)])
    );
    assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 10, 10)]);
    assert_eq!(awaiting(&pool).await?, 0);
    let reversal_row: (Uuid, i64) = sqlx::query_as(
        "SELECT event_id, stream_sequence FROM reward_ledger WHERE kind = 'reversal'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(reversal_row, (reversal.event_id, 1));

    // Everything again: nothing changes.
    assert_eq!(credits(&pool, &[placed]).await?, [false]);
    assert_eq!(apply_all(&pool, &[cancel]).await?, [false]);
    assert_eq!(ledger_rows(&pool).await?, 3);
    assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 10, 10)]);
    assert_eq!(awaiting(&pool).await?, 0);
    Ok(())
}

#[sqlx::test]
async fn a_batch_with_an_orders_credit_and_cancellation_nets_to_zero_in_either_order(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (first, second, kept) = (credit("ivy", 25), credit("jon", 7), credit("jon", 4));
    let batch = [
        Change::Reversal(cancellation(&first)),
        Change::Credit(first.clone()),
        Change::Credit(second.clone()),
        Change::Reversal(cancellation(&second)),
        Change::Reversal(under_another_id(&cancellation(&second))),
        Change::Credit(kept),
    ];
    assert_eq!(
        apply_all(&pool, &batch).await?,
        [true, true, true, true, false, true]
    );
    for placed in [&first, &second] {
        assert_eq!(
            entries(&pool, placed.order_id).await?,
            owned(&[("credit", placed.points), ("reversal", -placed.points)])
        );
    }
    assert_eq!(
        balances(&pool).await?,
        [("ivy".to_owned(), 0, 0), ("jon".to_owned(), 4, 4)]
    );
    assert_eq!(awaiting(&pool).await?, 0);
    assert_eq!(apply_all(&pool, &batch).await?, [false; 6]);
    assert_eq!(ledger_rows(&pool).await?, 5);
    Ok(())
}

#[sqlx::test]
async fn a_cancellation_naming_another_customer_or_total_than_its_credit_is_refused(
    pool: PgPool,
) -> anyhow::Result<()> {
    let placed = credit("ivy", 25);
    assert_eq!(credits(&pool, std::slice::from_ref(&placed)).await?, [true]);
    let other_customer = Reversal {
        customer_id: "jon".into(),
        ..cancellation(&placed)
    };
    let other_total = Reversal {
        order_total_minor: placed.order_total_minor + 100,
        points: placed.points + 1,
        ..cancellation(&placed)
    };
    let other_currency = Reversal {
        currency: Currency::from_code("USD").expect("a known currency"),
        ..cancellation(&placed)
    };
    for (refused, expected) in [
        (other_customer, r#"customer "jon", credited to "ivy""#),
        (other_total, "total 2600 EUR, credited for 2500 EUR"),
        (other_currency, "total 2500 USD, credited for 2500 EUR"),
    ] {
        // Alone, and in a batch with a credit: nothing of the batch is written.
        let batch = [Change::Credit(credit("kim", 1)), Change::Reversal(refused)];
        for changes in [&batch[1..], &batch[..]] {
            let error = apply_all(&pool, changes).await.unwrap_err();
            assert_eq!(classify(&error, &[]), Failure::Poison, "{error:#}");
            assert!(format!("{error:#}").contains(expected), "{error:#}");
        }
    }
    assert_eq!(
        entries(&pool, placed.order_id).await?,
        owned(&[("credit", 25)])
    );
    assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 25, 25)]);
    assert_eq!(awaiting(&pool).await?, 0);
    Ok(())
}

#[sqlx::test]
async fn a_cancellation_waiting_for_a_credit_it_disagrees_with_reverses_nothing(
    pool: PgPool,
) -> anyhow::Result<()> {
    let placed = credit("ivy", 25);
    let wrong = Reversal {
        customer_id: "jon".into(),
        ..cancellation(&placed)
    };
    assert_eq!(apply_all(&pool, &[Change::Reversal(wrong)]).await?, [true]);
    assert_eq!(credits(&pool, std::slice::from_ref(&placed)).await?, [true]);
    assert_eq!(
        entries(&pool, placed.order_id).await?,
        owned(&[("credit", 25)])
    );
    assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 25, 25)]);
    // It stays recorded, in the gauge, for a person to look at.
    assert_eq!(awaiting(&pool).await?, 1);
    Ok(())
}

/// Waits until `n` sessions of this database wait for an advisory lock.
async fn sessions_waiting(pool: &PgPool, n: i64) -> anyhow::Result<()> {
    harness::eventually(
        &format!("{n} session(s) to wait for an order's lock"),
        Duration::from_secs(10),
        || async {
            let waiting: Option<i64> = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'
                   AND datname = current_database()",
            )
            .fetch_one(pool)
            .await
            .ok();
            (waiting == Some(n)).then_some(())
        },
    )
    .await;
    Ok(())
}

/// `first` applied in a transaction held open while `second` is applied in
/// another, which must wait for it; then `first` commits.
async fn at_once(pool: &PgPool, first: Change, second: Change) -> anyhow::Result<[bool; 2]> {
    let mut holding = pool.begin().await?;
    let held = apply(&mut holding, &[(first, 1)]).await?;
    let racing = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await?;
            let new = apply(&mut tx, &[(second, 2)]).await?;
            tx.commit().await?;
            anyhow::Ok(new)
        }
    });
    // Without the order's lock it would not wait, and would miss the held
    // transaction's rows.
    sessions_waiting(pool, 1).await?;
    holding.commit().await?;
    let raced = racing.await??;
    Ok([held[0], raced[0]])
}

#[sqlx::test]
async fn a_credit_and_its_cancellation_applied_at_once_end_netted(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (one, other) = (credit("ivy", 25), credit("jon", 7));
    // The credit's transaction first, the cancellation's waiting for it.
    let outcomes = at_once(
        &pool,
        Change::Credit(one.clone()),
        Change::Reversal(cancellation(&one)),
    )
    .await?;
    assert_eq!(outcomes, [true, true]);
    // The cancellation's first, the credit's waiting for it.
    let outcomes = at_once(
        &pool,
        Change::Reversal(cancellation(&other)),
        Change::Credit(other.clone()),
    )
    .await?;
    assert_eq!(outcomes, [true, true]);
    for placed in [&one, &other] {
        assert_eq!(
            entries(&pool, placed.order_id).await?,
            owned(&[("credit", placed.points), ("reversal", -placed.points)])
        );
    }
    assert_eq!(
        balances(&pool).await?,
        [("ivy".to_owned(), 0, 0), ("jon".to_owned(), 0, 0)]
    );
    assert_eq!(awaiting(&pool).await?, 0);
    Ok(())
}

#[sqlx::test]
async fn the_ledger_pages_never_split_an_orders_entries(pool: PgPool) -> anyhow::Result<()> {
    let placed: Vec<Credit> = (1..=3).map(|i| credit("ivy", i)).collect();
    credits(&pool, &placed).await?;
    let cancels: Vec<Change> = placed
        .iter()
        .map(|c| Change::Reversal(cancellation(c)))
        .collect();
    apply_all(&pool, &cancels).await?;
    let mut conn = pool.acquire().await?;
    let first = ledger_page(&mut conn, None, 2).await?;
    let rest = ledger_page(&mut conn, Some(first[3].order_id), 2).await?;
    let seen: Vec<(Uuid, EntryKind, i64)> = first
        .iter()
        .chain(&rest)
        .map(|e| (e.order_id, e.kind, e.points))
        .collect();
    let mut expected: Vec<(Uuid, EntryKind, i64)> = placed
        .iter()
        .flat_map(|c| {
            [
                (c.order_id, EntryKind::Credit, c.points),
                (c.order_id, EntryKind::Reversal, -c.points),
            ]
        })
        .collect();
    expected.sort_by_key(|(order, kind, _)| (*order, *kind == EntryKind::Reversal));
    assert_eq!((first.len(), rest.len()), (4, 2));
    assert_eq!(seen, expected);
    Ok(())
}
