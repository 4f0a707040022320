//! What the broker answers to events out of place, on the subject-per-order
//! stream: each case publishes to orders of its own and reports the answer
//! as it came (stored, duplicate, or refused with its error code), so that
//! the report shows what a publisher of positioned events must handle —
//! including a retry of an event already stored, and atomic batches.

use serde::Serialize;
use uuid::Uuid;

use super::cancel::{Expectation, cancellation};
use super::layout::{Layout, Subjects};
use super::load::placed_event;
use super::wire::{self, Answer, Message};

/// A case the broker is put to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// An `OrderPlaced` expecting no event of its order yet.
    FirstPlaced,
    /// A second `OrderPlaced` of that order (another event id), expecting
    /// no event of its order yet.
    SecondPlaced,
    /// An `OrderCancelled` expecting a sequence before its `OrderPlaced`'s.
    CancelledExpectingTooLittle,
    /// An `OrderCancelled` of an order never placed.
    CancelledNeverPlaced,
    /// An `OrderCancelled` expecting its `OrderPlaced`'s sequence.
    Cancelled,
    /// That `OrderCancelled` again, same `Nats-Msg-Id` and expectation: a
    /// retry after a PubAck lost.
    RetryWithExpectation,
    /// That `OrderCancelled` again, same `Nats-Msg-Id`, no expectation.
    RetryWithoutExpectation,
    /// An `OrderCancelled` on the order's own subject, expecting a sequence
    /// before its `OrderPlaced`'s.
    OrderSubjectExpectingTooLittle,
    /// One atomic batch: two events of one order on two subjects, each
    /// expecting no event of the order yet.
    BatchTwoEventsOfAnOrder,
    /// One atomic batch: two events on one subject, each expecting none
    /// on it yet.
    BatchTwoEventsOfASubject,
    /// One atomic batch: a cancellation in place and one out of place,
    /// of two orders.
    BatchOneOutOfPlace,
}

impl Case {
    /// The case, for the report.
    pub fn label(self) -> &'static str {
        match self {
            Case::FirstPlaced => {
                "`OrderPlaced` expecting 0 on `orders.<id>.>` (no event of the order yet)"
            }
            Case::SecondPlaced => {
                "a second `OrderPlaced` of that order (another event id), expecting 0"
            }
            Case::CancelledExpectingTooLittle => {
                "`OrderCancelled` expecting the `OrderPlaced`'s sequence − 1"
            }
            Case::CancelledNeverPlaced => {
                "`OrderCancelled` of an order never placed (expecting another order's sequence)"
            }
            Case::Cancelled => "`OrderCancelled` expecting the `OrderPlaced`'s sequence",
            Case::RetryWithExpectation => {
                "that `OrderCancelled` again, same `Nats-Msg-Id` and expectation (a retry)"
            }
            Case::RetryWithoutExpectation => {
                "that `OrderCancelled` again, same `Nats-Msg-Id`, no expectation"
            }
            Case::OrderSubjectExpectingTooLittle => {
                "`OrderCancelled` on the order's own subject, expecting the `OrderPlaced`'s sequence − 1"
            }
            Case::BatchTwoEventsOfAnOrder => {
                "atomic batch: two events of one order on two subjects, each expecting 0 on `orders.<id>.>`"
            }
            Case::BatchTwoEventsOfASubject => {
                "atomic batch: two events on one subject, each expecting 0 on it"
            }
            Case::BatchOneOutOfPlace => {
                "atomic batch: two orders' `OrderCancelled`, one expecting its `OrderPlaced`'s sequence, one that sequence − 1"
            }
        }
    }
}

/// A case and what the broker answered.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub case: Case,
    pub answer: Answer,
}

/// Puts the broker to every [`Case`], in order, on the stream that
/// `subjects` lay out a subject per order in.
pub(super) async fn run(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();
    let mut answer = async |case: Case, message: Message| -> anyhow::Result<Answer> {
        let answer = wire::publish(client, message).await?;
        checks.push(Check {
            case,
            answer: answer.clone(),
        });
        Ok(answer)
    };
    // An `OrderPlaced` of order `id`, a fresh event id each time.
    let placed = |id: Uuid| {
        let event = placed_event(subjects.placed(Layout::PerOrder, id), id, 0);
        Message::new(event.subject, event.event_id, event.payload)
    };

    let order = Uuid::now_v7();
    let first = answer(
        Case::FirstPlaced,
        placed(order).expecting(0, Some(&subjects.of_order(order))),
    )
    .await?;
    let Answer::Stored {
        sequence: placed_at,
        ..
    } = first
    else {
        anyhow::bail!("the first OrderPlaced of an order: {}", first.label());
    };
    answer(
        Case::SecondPlaced,
        placed(order).expecting(0, Some(&subjects.of_order(order))),
    )
    .await?;
    let out_of_place = cancellation(subjects, Expectation::OrderSubjects, order, placed_at - 1);
    answer(Case::CancelledExpectingTooLittle, out_of_place).await?;
    let never_placed = Uuid::now_v7();
    answer(
        Case::CancelledNeverPlaced,
        cancellation(
            subjects,
            Expectation::OrderSubjects,
            never_placed,
            placed_at,
        ),
    )
    .await?;
    let cancelled = cancellation(subjects, Expectation::OrderSubjects, order, placed_at);
    answer(Case::Cancelled, cancelled.clone()).await?;
    answer(Case::RetryWithExpectation, cancelled.clone()).await?;
    answer(Case::RetryWithoutExpectation, cancelled.unchecked()).await?;

    let own = Uuid::now_v7();
    let own_placed = wire::publish(client, placed(own)).await?;
    let Answer::Stored {
        sequence: own_placed_at,
        ..
    } = own_placed
    else {
        anyhow::bail!("an OrderPlaced: {}", own_placed.label());
    };
    answer(
        Case::OrderSubjectExpectingTooLittle,
        cancellation(subjects, Expectation::OrderSubject, own, own_placed_at - 1),
    )
    .await?;

    let batched = Uuid::now_v7();
    let two_of_an_order = vec![
        placed(batched).expecting(0, Some(&subjects.of_order(batched))),
        cancellation(subjects, Expectation::OrderSubjects, batched, 0),
    ];
    let batch_answer = wire::publish_atomic(client, two_of_an_order).await?;
    checks.push(Check {
        case: Case::BatchTwoEventsOfAnOrder,
        answer: batch_answer,
    });
    let one_subject = Uuid::now_v7();
    let two_of_a_subject = vec![
        placed(one_subject).expecting(0, None),
        placed(one_subject).expecting(0, None),
    ];
    let batch_answer = wire::publish_atomic(client, two_of_a_subject).await?;
    checks.push(Check {
        case: Case::BatchTwoEventsOfASubject,
        answer: batch_answer,
    });
    let (left, right) = (Uuid::now_v7(), Uuid::now_v7());
    let mut sequences = Vec::new();
    for id in [left, right] {
        match wire::publish(client, placed(id)).await? {
            Answer::Stored { sequence, .. } => sequences.push(sequence),
            other => anyhow::bail!("an OrderPlaced: {}", other.label()),
        }
    }
    let one_out_of_place = vec![
        cancellation(subjects, Expectation::OrderSubjects, left, sequences[0]),
        cancellation(
            subjects,
            Expectation::OrderSubjects,
            right,
            sequences[1] - 1,
        ),
    ];
    let batch_answer = wire::publish_atomic(client, one_out_of_place).await?;
    checks.push(Check {
        case: Case::BatchOneOutOfPlace,
        answer: batch_answer,
    });
    Ok(checks)
}
