//! Publishing in batches, against a private nats-server: an atomic batch
//! stores all its events once, in order; a batch holding an event the stream
//! already has is refused whole by the server and then published one by one;
//! a server without atomic batches (older than 2.12) gets pipelined single
//! publishes. Counts come from the publisher's own PubAcks and from the
//! stream's own message count. Whichever way an event goes, its
//! `traceparent` header is stored with it.

use std::path::PathBuf;

use harness::servers::{Nats, nats_server_version};
use shared_events::jetstream::{self, Confirmed, Outgoing, Publisher};
use shared_events::{Names, StreamSettings};
use uuid::Uuid;

/// A private server run by `bin`, its streams under `prefix`, and a
/// publisher that batches where that server lets it.
async fn publisher_on(bin: PathBuf, prefix: &str) -> (Nats, Publisher, Names) {
    let nats = tokio::task::spawn_blocking(move || Nats::start_program(bin))
        .await
        .unwrap()
        .expect("a private nats-server");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let names = Names::new(prefix).unwrap();
    let features = jetstream::ensure_streams(
        &async_nats::jetstream::new(client.clone()),
        &names,
        &StreamSettings::default(),
    )
    .await
    .unwrap();
    (nats, Publisher::new(client, features.atomic_batches), names)
}

fn events(names: &Names, ids: &[Uuid]) -> Vec<Outgoing> {
    ids.iter()
        .map(|id| Outgoing {
            subject: names.order_placed_subject(),
            event_id: *id,
            payload: id.to_string().into_bytes(),
            traceparent: Some(traceparent(id)),
        })
        .collect()
}

/// A trace context of its own for each event, made from its id.
fn traceparent(id: &Uuid) -> String {
    let hex = id.simple().to_string();
    format!("00-{hex}-{}-01", &hex[16..])
}

fn ids(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::now_v7()).collect()
}

async fn publish(publisher: &Publisher, events: Vec<Outgoing>) -> Confirmed {
    publisher
        .send_batch(events)
        .await
        .unwrap()
        .confirmed()
        .await
}

/// The event ids in the stream, in stream order; each event's
/// `traceparent` header is checked to be the one it was sent with.
async fn stored(publisher: &Publisher, names: &Names) -> Vec<Uuid> {
    let stream = publisher
        .jetstream()
        .get_stream(names.stream())
        .await
        .unwrap();
    let count = stream.get_info().await.unwrap().state.messages;
    let mut ids = Vec::new();
    for sequence in 1..=count {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let id = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .expect("every event carries its id")
            .to_string();
        let id: Uuid = id.parse().unwrap();
        let sent_with = message
            .headers
            .get(jetstream::TRACEPARENT)
            .map(|value| value.to_string());
        assert_eq!(sent_with, Some(traceparent(&id)), "event {id}");
        ids.push(id);
    }
    ids
}

/// The harness's nats-server, when it takes atomic batches (2.12+).
fn batching_server() -> Option<PathBuf> {
    let bin = Nats::program().ok()?;
    match nats_server_version(&bin) {
        Some(version) if version >= (2, 12) => Some(bin),
        other => {
            eprintln!(
                "skipped: atomic batches need nats-server 2.12+, the harness has {other:?} ({})",
                bin.display()
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_batch_stores_each_event_once_in_order() {
    let Some(bin) = batching_server() else { return };
    let (_nats, publisher, names) = publisher_on(bin, "batch_order").await;
    assert!(publisher.atomic_batches());
    // More than one atomic batch holds: it goes as three, in order.
    let sent = ids(jetstream::MAX_ATOMIC_BATCH * 2 + 500);

    let answers = publisher
        .send_batch(events(&names, &sent))
        .await
        .unwrap()
        .each()
        .await;

    // Each event is answered with the sequence the stream stored it at.
    let answered: Vec<(Uuid, u64, bool)> = answers
        .into_iter()
        .map(|answer| answer.map(|p| (p.event_id, p.stream_sequence, p.duplicate)))
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<(Uuid, u64, bool)> = sent
        .iter()
        .zip(1..)
        .map(|(id, seq)| (*id, seq, false))
        .collect();
    assert_eq!(answered, expected);
    assert_eq!(stored(&publisher, &names).await, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_holding_a_stored_event_is_published_one_by_one() {
    let Some(bin) = batching_server() else { return };
    let (_nats, publisher, names) = publisher_on(bin, "batch_replay").await;
    let sent = ids(10);
    // Three of them were published before: what a relay meets when it died
    // after their PubAcks and before its DELETE.
    let earlier = publish(&publisher, events(&names, &sent[2..5])).await;
    assert_eq!((earlier.new, earlier.duplicates), (3, 0));

    let confirmed = publish(&publisher, events(&names, &sent)).await;

    assert_eq!((confirmed.new, confirmed.duplicates), (7, 3));
    assert!(confirmed.failed.is_none());
    let mut in_stream = stored(&publisher, &names).await;
    in_stream.sort();
    assert_eq!(in_stream, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_atomic_batches_events_are_published_one_by_one() {
    let bin = Nats::program().expect("a nats-server");
    let (nats, batching, names) = publisher_on(bin, "batch_off").await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let publisher = Publisher::new(client, false);
    let sent = ids(20);

    let first = publish(&publisher, events(&names, &sent[..5])).await;
    let second = publish(&publisher, events(&names, &sent)).await;

    assert_eq!((first.new, first.duplicates), (5, 0));
    assert_eq!((second.new, second.duplicates), (15, 5));
    assert_eq!(stored(&batching, &names).await, sent);
}

/// Debian bookworm's nats-server is 2.9: the stream set-up finds that it
/// keeps no `allow_atomic`, and the publisher pipelines single publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_older_than_2_12_gets_single_publishes() {
    let old = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|bin| nats_server_version(bin).is_some_and(|version| version < (2, 12)));
    let Some(bin) = old else {
        eprintln!("skipped: no nats-server older than 2.12 on this machine");
        return;
    };
    let (_nats, publisher, names) = publisher_on(bin, "batch_old").await;
    assert!(!publisher.atomic_batches());
    let sent = ids(30);

    let confirmed = publish(&publisher, events(&names, &sent)).await;

    assert_eq!((confirmed.new, confirmed.duplicates), (30, 0));
    assert_eq!(stored(&publisher, &names).await, sent);
}
