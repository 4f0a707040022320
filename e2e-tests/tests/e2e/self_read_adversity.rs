//! Self-read under an unlucky network, a racing client and a skewed clock:
//! every answer means exactly one thing (202 stored, 503 nothing sent, 504
//! unknown until a retry with the same key, 422 the key is another order's).

use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::api::{assert_credited_exactly, assert_projected_exactly, audit, order, place_order};
use harness::proxy::{BrokerProxy, Replies, shifted_clock};
use harness::{CONVERGE, CrashPoint, Mode, TestEnv, eventually};
use serde_json::Value;

/// Retries `body` under `key` until the outcome is known; the final answer.
async fn resolve(env: &TestEnv, url: &str, body: &Value, key: &str) -> reqwest::Response {
    eventually("a known outcome", CONVERGE, || async {
        let response = place_order(&env.http, url, body, Some(key)).await.ok()?;
        (response.status() != 504).then_some(response)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubacks_delayed_past_the_timeout_never_answer_503_for_a_stored_order() {
    let env = TestEnv::new("self_read_delayed_acks").await;
    let proxy = BrokerProxy::start(env.nats_url()).await;
    let orders = env
        .order_service(Mode::SelfRead)
        .set("NATS_URL", proxy.url())
        .set("PUBLISH_TIMEOUT", "1s")
        .start()
        .await;
    let _rewards = env.rewards_service().start().await;

    proxy.set(Replies::Delay(Duration::from_millis(1500)));
    let bodies: Vec<Value> = (0..5)
        .map(|i| order(&format!("d{i}"), &[("SKU-1", 1, 1000 + i)]))
        .collect();
    let answers = join_all(bodies.iter().enumerate().map(|(i, body)| {
        let (env, url) = (&env, orders.url());
        async move {
            let response = place_order(&env.http, url, body, Some(&format!("delayed-{i}")))
                .await
                .expect("POST /orders");
            response.status().as_u16()
        }
    }))
    .await;
    proxy.set(Replies::Pass);

    // Sent and stored, answered late: never "not placed".
    assert!(
        answers.iter().all(|s| *s == 202 || *s == 504),
        "answers {answers:?}"
    );
    for (i, (body, status)) in bodies.iter().zip(&answers).enumerate() {
        if *status == 504 {
            let retry = resolve(&env, orders.url(), body, &format!("delayed-{i}")).await;
            assert_eq!(retry.status(), 202);
        }
    }
    assert_projected_exactly(&env, 5).await;
    assert_credited_exactly(&env, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_answer_never_comes_is_504_with_a_key_that_resolves_it() {
    let env = TestEnv::new("self_read_unknown_outcome").await;
    let proxy = BrokerProxy::start(env.nats_url()).await;
    let orders = env
        .order_service(Mode::SelfRead)
        .set("NATS_URL", proxy.url())
        .set("PUBLISH_TIMEOUT", "500ms")
        .start()
        .await;
    let _rewards = env.rewards_service().start().await;
    let body = order("una", &[("SKU-1", 3, 700)]);

    proxy.set(Replies::Hold);
    let unknown = place_order(&env.http, orders.url(), &body, None)
        .await
        .expect("POST /orders");
    assert_eq!(unknown.status(), 504);
    let header_key = unknown.headers()["idempotency-key"]
        .to_str()
        .unwrap()
        .to_owned();
    let error: Value = unknown.json().await.unwrap();
    assert_eq!(error["error"]["code"], "outcome_unknown");
    assert_eq!(error["idempotency_key"], header_key.as_str());
    proxy.set(Replies::Pass);

    // The publish was stored although no answer came: the retry with the
    // handed-out key finds it and answers for it.
    let retry = resolve(&env, orders.url(), &body, &header_key).await;
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let placed: Value = retry.json().await.unwrap();
    let read = env
        .http
        .get(format!(
            "{}/orders/{}?wait=2s",
            orders.url(),
            placed["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_projected_exactly(&env, 1).await;
    assert_credited_exactly(&env, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_sent_at_once_with_two_bodies_places_one_order_and_refuses_the_other() {
    let env = TestEnv::new("self_read_key_race").await;
    let orders = env.order_service(Mode::SelfRead).start().await;
    let _rewards = env.rewards_service().start().await;
    let rounds = 15;

    for round in 0..rounds {
        let key = format!("race-{round}");
        let bodies = [
            order("rita", &[("SKU-A", 1, 100 + round)]),
            order("rita", &[("SKU-B", 2, 100 + round)]),
        ];
        let answers = join_all(bodies.iter().map(|body| {
            let (env, url, key) = (&env, orders.url(), key.as_str());
            async move {
                let response = place_order(&env.http, url, body, Some(key)).await.unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            }
        }))
        .await;
        let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [202, 422], "round {round}");
        let (_, placed) = answers.iter().find(|(s, _)| *s == 202).unwrap();
        let (_, refused) = answers.iter().find(|(s, _)| *s == 422).unwrap();
        assert_eq!(refused["error"]["code"], "idempotency_key_reused");
        let stored: Value = env
            .http
            .get(format!(
                "{}/orders/{}?wait=10s",
                orders.url(),
                placed["id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stored["lines"], placed["lines"], "round {round}");
    }
    assert_projected_exactly(&env, rounds).await;
    assert_credited_exactly(&env, rounds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_clock_ahead_of_order_service_drops_no_accepted_order() {
    let env = TestEnv::new("self_read_clock_skew").await;
    // Relative skew is what a clock rule would compare: order-service's
    // clock runs 5 s behind the broker's (the broker's is 5 s ahead).
    // nats-server reads the clock without libc, so the service is shifted.
    let skew = match shifted_clock("-5s") {
        Ok(settings) => settings,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let orders = env
        .order_service(Mode::SelfRead)
        .set_all(skew)
        .start()
        .await;
    let rewards = env.rewards_service().start().await;

    let placed = join_all((0..20).map(|i| {
        let (env, url) = (&env, orders.url());
        async move {
            let body = order(&format!("s{}", i % 4), &[("SKU-1", 1, 500 + i)]);
            let response = place_order(&env.http, url, &body, Some(&format!("skew-{i}")))
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    }))
    .await;
    assert_eq!(
        placed.iter().map(|(status, _)| *status).collect::<Vec<_>>(),
        vec![202; 20]
    );
    // The shift took effect: order-service stamps orders 5 s in the past.
    let created_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(placed[0].1["created_at"].clone()).unwrap();
    let behind = chrono::Utc::now() - created_at;
    assert!(
        behind > chrono::Duration::seconds(4),
        "clock behind by {behind}"
    );
    assert_projected_exactly(&env, 20).await;
    assert_credited_exactly(&env, 20).await;
    let (code, findings) = audit(&env, orders.url(), rewards.url(), &[]).await.unwrap();
    assert_eq!((code, &findings["consistent"]), (0, &Value::Bool(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_past_the_puback_the_retry_reads_its_order_at_once() {
    let env = TestEnv::new("self_read_crash_read_your_write").await;
    let _rewards = env.rewards_service().start().await;
    // The projector's ack wait as deployed: the crashed process's copy of
    // the event is redelivered only after it.
    let self_read = env
        .order_service(Mode::SelfRead)
        .set("CONSUMER_ACK_WAIT", "30s");
    let mut orders = self_read
        .clone()
        .crash_at(CrashPoint::SelfReadAfterPublish)
        .start()
        .await;
    let body = order("ron", &[("SKU-1", 1, 4200)]);
    harness::api::place_into_crash(&env.http, &mut orders, &body, Some("ron-1")).await;

    let restarted = self_read.start().await;
    let retry = place_order(&env.http, restarted.url(), &body, Some("ron-1"))
        .await
        .unwrap();
    assert_eq!(retry.status(), 202);
    let placed: Value = retry.json().await.unwrap();
    let started = Instant::now();
    let read = env
        .http
        .get(format!(
            "{}/orders/{}?wait=2s",
            restarted.url(),
            placed["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(read.status(), 200);
    assert!(took < Duration::from_secs(1), "read after {took:?}");
    assert_eq!(read.json::<Value>().await.unwrap(), placed);
    assert_credited_exactly(&env, 1).await;
}
