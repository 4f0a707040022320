//! The consistency audit, run as its binary against running services.

use harness::api::{assert_credited_exactly, order, place_into_crash, place_ok};
use harness::service::Service;
use harness::{CrashPoint, Mode, TestEnv};
use serde_json::Value;
use uuid::Uuid;

async fn audit(env: &TestEnv, orders: &Service, rewards: &Service, extra: &[&str]) -> (i32, Value) {
    harness::api::audit(env, orders.url(), rewards.url(), extra)
        .await
        .expect("running order-events audit")
}

fn missing(findings: &Value) -> Vec<Uuid> {
    findings["orders_without_credit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_names_a_credit_removed_by_hand_and_repair_restores_it() {
    let env = TestEnv::new("audit_removed_credit").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let rewards = env.rewards_service().start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            place_ok(
                &env.http,
                orders.url(),
                &order("sam", &[("SKU-1", 1, 1000 + i)]),
            )
            .await,
        );
    }
    assert_credited_exactly(&env, 5).await;
    let (code, findings) = audit(&env, &orders, &rewards, &[]).await;
    assert_eq!((code, &findings["consistent"]), (0, &Value::Bool(true)));
    assert_eq!(
        (findings["orders"].as_u64(), findings["credits"].as_u64()),
        (Some(5), Some(5))
    );

    let removed = ids[2];
    let rewards_db = env.rewards_db().await;
    sqlx::query(
        "WITH gone AS (DELETE FROM reward_ledger WHERE order_id = $1 RETURNING customer_id, points)
         UPDATE reward_accounts a SET balance = a.balance - gone.points FROM gone
         WHERE a.customer_id = gone.customer_id",
    )
    .bind(removed)
    .execute(&rewards_db)
    .await
    .unwrap();
    let (code, findings) = audit(&env, &orders, &rewards, &[]).await;
    assert_eq!(code, 1);
    assert_eq!(missing(&findings), vec![removed]);

    let (code, findings) = audit(&env, &orders, &rewards, &["--repair"]).await;
    assert_eq!((code, findings["republished"].as_u64()), (0, Some(1)));
    assert_credited_exactly(&env, 5).await;
    let (code, _) = audit(&env, &orders, &rewards, &[]).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_and_repairs_the_dual_write_loss() {
    let env = TestEnv::new("audit_dual_write_loss").await;
    let rewards = env.rewards_service().start().await;
    let mut crashing = env
        .order_service(Mode::DualWrite)
        .crash_at(CrashPoint::AfterCommitBeforePublish)
        .start()
        .await;
    place_into_crash(
        &env.http,
        &mut crashing,
        &order("tia", &[("SKU-1", 1, 4000)]),
        None,
    )
    .await;
    let orders = env.order_service(Mode::DualWrite).start().await;
    place_ok(&env.http, orders.url(), &order("tia", &[("SKU-2", 1, 500)])).await;
    assert_credited_exactly(&env, 1).await;

    let (code, findings) = audit(&env, &orders, &rewards, &[]).await;
    assert_eq!(code, 1);
    assert_eq!(missing(&findings).len(), 1);

    let (code, _) = audit(&env, &orders, &rewards, &["--repair"]).await;
    assert_eq!(code, 0);
    assert_credited_exactly(&env, 2).await;
    let (code, findings) = audit(&env, &orders, &rewards, &[]).await;
    assert_eq!((code, &findings["consistent"]), (0, &Value::Bool(true)));
}
