//! The chaos run: for each mode, clients place orders at a steady rate while
//! order-service (with its relay, CDC reader or projector), rewards-service,
//! NATS and PostgreSQL are killed and restarted at random moments. Then the
//! run waits for convergence and counts, for the orders the clients were
//! told about: credited once, lost, doubled ([`harness::verdict`]).
//!
//! The clients ([`harness::clients`]) retry each order with its
//! `Idempotency-Key` until it is acknowledged.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use harness::api::credits;
use harness::clients::{Clients, Load, order_ids};
use harness::cluster::{NODES, NatsCluster};
use harness::converge::{converge, tally};
use harness::env::{Private, TestEnv};
use harness::mode::Mode;
use harness::servers::free_port;
use harness::service::Service;
use harness::verdict::Tally;
use harness::{CONVERGE, eventually};

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub modes: Vec<Mode>,
    /// Orders to have acknowledged per mode.
    pub orders: usize,
    /// Faults per mode, spread over the run.
    pub faults: usize,
    /// Orders per second the clients aim at.
    pub rate: f64,
    pub seed: u64,
    /// On a three-node NATS cluster (streams on all three), with the
    /// nodes' faults (kill, cut off, pause) instead of the one server's.
    pub cluster: bool,
}

/// One mode's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosResult {
    pub mode: &'static str,
    /// NATS servers: 1, or 3 with `--cluster`.
    pub nats_nodes: usize,
    /// Orders the clients were told about (201 or 202).
    pub acknowledged: usize,
    #[serde(flatten)]
    pub tally: Tally,
    pub faults: Vec<String>,
    /// From the end of the last fault to the last credit.
    pub converge_secs: f64,
    /// Whether `order-events audit` found the services consistent.
    pub audit_consistent: bool,
    /// Orders `order-events audit --repair` re-published (dual-write).
    pub repaired: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillOrderService,
    KillRewardsService,
    KillNats,
    CrashPostgres,
    /// Of a cluster node, picked at random.
    KillNode(usize),
    CutNode(usize),
    PauseNode(usize),
}

impl Fault {
    const ONE_SERVER: [Fault; 4] = [
        Fault::KillOrderService,
        Fault::KillRewardsService,
        Fault::KillNats,
        Fault::CrashPostgres,
    ];

    /// A fault at random: on a cluster, a node's in place of the one
    /// server's, cutting off only where the cluster can.
    fn pick(random: &mut StdRng, cluster: Option<&NatsCluster>) -> Self {
        let Some(cluster) = cluster else {
            return Self::ONE_SERVER[random.random_range(0..Self::ONE_SERVER.len())];
        };
        let node = random.random_range(0..NODES);
        let mut faults = vec![
            Fault::KillOrderService,
            Fault::KillRewardsService,
            Fault::CrashPostgres,
            Fault::KillNode(node),
            Fault::PauseNode(node),
        ];
        if cluster.can_cut().is_ok() {
            faults.push(Fault::CutNode(node));
        }
        faults[random.random_range(0..faults.len())]
    }

    fn name(self) -> String {
        match self {
            Fault::KillOrderService => "kill -9 order-service".to_owned(),
            Fault::KillRewardsService => "kill -9 rewards-service".to_owned(),
            Fault::KillNats => "kill -9 nats-server".to_owned(),
            Fault::CrashPostgres => "crash PostgreSQL".to_owned(),
            Fault::KillNode(i) => format!("kill -9 node {}", i + 1),
            Fault::CutNode(i) => format!("cut node {} off", i + 1),
            Fault::PauseNode(i) => format!("SIGSTOP node {}", i + 1),
        }
    }
}

/// Runs every configured mode in turn.
pub async fn run(config: &ChaosConfig) -> anyhow::Result<Vec<ChaosResult>> {
    let mut results = Vec::new();
    for (i, &mode) in config.modes.iter().enumerate() {
        let seed = config.seed.wrapping_add(i as u64 * 7919) | 1;
        results.push(run_mode(mode, config, seed).await?);
    }
    Ok(results)
}

struct Services {
    orders: Service,
    rewards: Service,
}

async fn run_mode(mode: Mode, config: &ChaosConfig, seed: u64) -> anyhow::Result<ChaosResult> {
    let name = mode.name();
    let test_name = format!("chaos_{}", name.replace('-', "_"));
    let mut cluster = if config.cluster {
        Some(NatsCluster::start().await?)
    } else {
        None
    };
    let private = Private {
        nats: cluster.is_none(),
        postgres: true,
        durable: false,
    };
    let env = match &cluster {
        Some(cluster) => TestEnv::on_cluster_with(&test_name, cluster, private).await,
        None => TestEnv::with_private(&test_name, private).await,
    };
    // Fixed ports, so that clients find a restarted service where it was.
    let orders_addr = format!("127.0.0.1:{}", free_port());
    let rewards_addr = format!("127.0.0.1:{}", free_port());
    let start_orders = || {
        env.order_service(mode)
            .set("LISTEN_ADDR", &orders_addr)
            .start()
    };
    let start_rewards = || {
        env.rewards_service()
            .set("LISTEN_ADDR", &rewards_addr)
            .start()
    };
    let services = Arc::new(tokio::sync::Mutex::new(Services {
        orders: start_orders().await,
        rewards: start_rewards().await,
    }));
    let orders_url = format!("http://{orders_addr}");

    let expected_secs = config.orders as f64 / config.rate;
    let clients = Clients::start(
        &env.http,
        &[orders_url],
        &Load {
            orders: config.orders,
            rate: config.rate,
            label: format!("chaos-{name}"),
        },
    );

    // Faults, spread over the time the orders should take.
    // Seeded, so that a run can be repeated with `--seed`.
    let mut random = StdRng::seed_from_u64(seed);
    let mut faults = Vec::new();
    let gap = Duration::from_secs_f64(expected_secs / (config.faults as f64 + 1.0));
    for _ in 0..config.faults {
        tokio::time::sleep(random.random_range(gap / 2..gap * 3 / 2)).await;
        let fault = Fault::pick(&mut random, cluster.as_ref());
        let down = random.random_range(Duration::from_millis(100)..Duration::from_millis(800));
        // A node cut off or paused long enough for the others to elect a
        // new leader (their election timeout is a few seconds).
        let stalled = random.random_range(Duration::from_secs(1)..Duration::from_secs(6));
        let mut running = services.lock().await;
        match fault {
            Fault::KillOrderService => {
                running.orders.kill().await;
                tokio::time::sleep(down).await;
                running.orders = start_orders().await;
            }
            Fault::KillRewardsService => {
                running.rewards.kill().await;
                tokio::time::sleep(down).await;
                running.rewards = start_rewards().await;
            }
            Fault::KillNats => {
                env.kill_nats();
                tokio::time::sleep(down).await;
                env.start_nats();
            }
            Fault::CrashPostgres => {
                env.crash_postgres();
            }
            Fault::KillNode(i) => {
                let cluster = cluster.as_mut().expect("node faults come with a cluster");
                cluster.kill(i);
                tokio::time::sleep(down).await;
                cluster.start_again(i).await?;
            }
            Fault::CutNode(i) => {
                let cluster = cluster.as_ref().expect("node faults come with a cluster");
                cluster.cut(i)?;
                tokio::time::sleep(stalled).await;
                cluster.heal(i)?;
            }
            Fault::PauseNode(i) => {
                let cluster = cluster.as_mut().expect("node faults come with a cluster");
                cluster.pause(i);
                tokio::time::sleep(stalled).await;
                cluster.resume(i);
            }
        }
        drop(running);
        faults.push(fault.name());
        eprintln!(
            "\n[chaos {name}] fault {}/{}: {}",
            faults.len(),
            config.faults,
            fault.name()
        );
    }
    let last_fault = Instant::now();
    let (answers, _) = clients.finish().await?;
    let acknowledged = order_ids(&answers);
    eprintln!(
        "\n[chaos {name}] {} orders acknowledged; waiting for convergence",
        acknowledged.len()
    );

    let converged = converge(&env, &acknowledged, mode).await?;
    let converge_secs = converged.duration_since(last_fault).as_secs_f64();
    let tally = tally(&env, &answers).await?;
    let rewards_db = env.rewards_db().await;

    let running = services.lock().await;
    // The audit, too, is told what the clients were told.
    let told = tempfile::NamedTempFile::new()?;
    let lines: Vec<String> = acknowledged.iter().map(Uuid::to_string).collect();
    std::fs::write(told.path(), lines.join("\n"))?;
    let told = ["--acknowledged", told.path().to_str().unwrap_or_default()];
    let audit_consistent = audit(&env, &running, &told).await?["consistent"] == Value::Bool(true);
    let repaired = if mode == Mode::DualWrite && !audit_consistent {
        let report = audit(&env, &running, &[&told[..], &["--repair"]].concat()).await?;
        let repaired = report["republished"].as_u64().unwrap_or(0) as usize;
        let expected = acknowledged.len() as i64;
        eventually("the repaired credits", CONVERGE, || async {
            (credits(&rewards_db).await >= expected).then_some(())
        })
        .await;
        Some(repaired)
    } else {
        None
    };

    let result = ChaosResult {
        mode: name,
        nats_nodes: if cluster.is_some() { NODES } else { 1 },
        acknowledged: acknowledged.len(),
        tally,
        faults,
        converge_secs,
        audit_consistent,
        repaired,
    };
    eprintln!(
        "[chaos {name}] acknowledged {}: {:?}",
        result.acknowledged, result.tally
    );
    Ok(result)
}

async fn audit(env: &TestEnv, services: &Services, extra: &[&str]) -> anyhow::Result<Value> {
    let (_, findings) =
        harness::api::audit(env, services.orders.url(), services.rewards.url(), extra).await?;
    Ok(findings)
}

/// The comparison table.
pub fn table(results: &[ChaosResult]) -> String {
    let mut out = String::from(
        "| mode | NATS nodes | acknowledged | credited once | lost | doubled | not acknowledged | wrong balances | wrong points | faults | converged after | audit |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in results {
        let audit = match r.repaired {
            Some(n) => format!("inconsistent; --repair re-published {n}"),
            None if r.audit_consistent => "consistent".to_owned(),
            None => "INCONSISTENT".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} |",
            r.mode,
            r.nats_nodes,
            r.acknowledged,
            r.tally.credited_once,
            r.tally.lost,
            r.tally.doubled,
            r.tally.unacknowledged,
            r.tally.wrong_balances,
            r.tally.wrong_points,
            r.faults.len(),
            r.converge_secs,
            audit
        );
    }
    out
}
