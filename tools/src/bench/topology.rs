//! What replication and a second instance cost: each mode's full-speed
//! throughput (placed → credited) on one NATS node and on a three-node
//! cluster keeping every stream on all three (R3), each with one and with
//! two instances of each service, as ratios to the mode's one node, one
//! instance row of the same run.
//!
//! Every run of a row starts on fresh servers, and durability is the same
//! in all of them: a private PostgreSQL with fsync on, and nats-servers
//! that flush every write before acknowledging it (`sync_interval:
//! always`). With two instances the clients take the order-service
//! instances in turn.

use anyhow::Context as _;
use serde::Serialize;

use super::figures::percentiles;
use super::load::{Driven, full_speed};
use super::{BenchConfig, BenchMode, progress};
use harness::cluster::{NODES, NatsCluster};
use harness::env::{Private, TestEnv};
use harness::fleet::Fleet;
use harness::servers::{nats_server_bin, syncs_always};

/// Where a mode runs: NATS nodes (a stream is kept on every one of them)
/// and instances of each service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub nats_nodes: usize,
    pub instances: usize,
}

impl Topology {
    /// The rows of the comparison, per mode; the first is the one the
    /// others are measured against.
    pub const ALL: [Topology; 4] = [
        Topology {
            nats_nodes: 1,
            instances: 1,
        },
        Topology {
            nats_nodes: 1,
            instances: 2,
        },
        Topology {
            nats_nodes: NODES,
            instances: 1,
        },
        Topology {
            nats_nodes: NODES,
            instances: 2,
        },
    ];

    /// `R3, 2 instances`: the stream's replicas, then the instances.
    pub fn label(self) -> String {
        let plural = if self.instances == 1 { "" } else { "s" };
        format!("R{}, {} instance{plural}", self.nats_nodes, self.instances)
    }
}

/// One mode on one topology. Latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct TopologyResult {
    pub mode: &'static str,
    #[serde(flatten)]
    pub topology: Topology,
    /// Orders placed, in all rounds.
    pub orders: u64,
    /// Orders per second placed → credited in each round, in the order
    /// the rounds ran.
    pub round_throughputs: Vec<f64>,
    /// Their mean.
    pub throughput: f64,
    /// `throughput` over the same mode's one node, one instance row.
    pub ratio_to_single: f64,
    /// Over every request of every round.
    pub http_p50_ms: f64,
    pub http_p99_ms: f64,
}

/// Every mode on every [`Topology`], in that order.
#[derive(Debug, Clone, Serialize)]
pub struct TopologyReport {
    pub duration_secs: f64,
    pub rounds: usize,
    pub concurrency: usize,
    pub cores: usize,
    pub results: Vec<TopologyResult>,
}

/// Runs every configured mode on every [`Topology`], `rounds` times,
/// reporting progress on stderr. Rounds run the topologies forward and
/// backward in turn (ABCD DCBA …), so that a drift over the run — a
/// neighbour's build on a shared machine — falls on every row alike.
pub async fn run(config: &BenchConfig, rounds: usize) -> anyhow::Result<TopologyReport> {
    anyhow::ensure!(rounds > 0, "the comparison needs at least one round");
    // The single node must flush every write as the cluster's nodes do, or
    // the rows would compare different durability.
    let bin = nats_server_bin()?;
    anyhow::ensure!(
        syncs_always(&bin),
        "{} is older than 2.10, which cannot flush every write (`sync_interval: always`)",
        bin.display()
    );
    let mut results = Vec::new();
    for &mode in &config.modes {
        let mut rows: Vec<Row> = Topology::ALL.iter().map(|_| Row::default()).collect();
        for round in 1..=rounds {
            let mut order: Vec<usize> = (0..Topology::ALL.len()).collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for i in order {
                let topology = Topology::ALL[i];
                let (driven, throughput) = run_row(mode, topology, config)
                    .await
                    .with_context(|| format!("{} on {}", mode.name(), topology.label()))?;
                progress(
                    mode.name(),
                    &format!(
                        "round {round}/{rounds}, {}: {throughput:.0} orders/s placed → credited",
                        topology.label()
                    ),
                );
                rows[i].add(driven, throughput);
            }
        }
        let single = rows[0].mean();
        for (topology, row) in Topology::ALL.into_iter().zip(rows) {
            let result = row.result(mode, topology, single);
            progress(
                mode.name(),
                &format!(
                    "{}: {:.0} orders/s ({:.2} × {}); HTTP p99 {:.1} ms",
                    topology.label(),
                    result.throughput,
                    result.ratio_to_single,
                    Topology::ALL[0].label(),
                    result.http_p99_ms
                ),
            );
            results.push(result);
        }
    }
    Ok(TopologyReport {
        duration_secs: config.duration.as_secs_f64(),
        rounds,
        concurrency: config.concurrency,
        cores: super::cores(),
        results,
    })
}

/// One row's rounds, as they come in.
#[derive(Default)]
struct Row {
    orders: u64,
    throughputs: Vec<f64>,
    latencies_ms: Vec<f64>,
}

impl Row {
    fn add(&mut self, driven: Driven, throughput: f64) {
        self.orders += driven.placed;
        self.throughputs.push(throughput);
        self.latencies_ms.extend(driven.latencies_ms);
    }

    fn mean(&self) -> f64 {
        self.throughputs.iter().sum::<f64>() / self.throughputs.len().max(1) as f64
    }

    /// The row's result, its throughput over `single`'s.
    fn result(self, mode: BenchMode, topology: Topology, single: f64) -> TopologyResult {
        let throughput = self.mean();
        let [http_p50_ms, http_p99_ms] = percentiles(&self.latencies_ms, [0.5, 0.99]);
        TopologyResult {
            mode: mode.name(),
            topology,
            orders: self.orders,
            throughput,
            ratio_to_single: throughput / single,
            http_p50_ms,
            http_p99_ms,
            round_throughputs: self.throughputs,
        }
    }
}

/// One full-speed run of `mode` on `topology`, on servers of its own:
/// what was driven and the orders per second placed → credited.
async fn run_row(
    mode: BenchMode,
    topology: Topology,
    config: &BenchConfig,
) -> anyhow::Result<(Driven, f64)> {
    let label = format!("{} {}", mode.name(), topology.label());
    let name = format!(
        "bench_topo_{}_r{}x{}",
        mode.name().replace('-', "_"),
        topology.nats_nodes,
        topology.instances
    );
    let durable_postgres = Private {
        nats: false,
        postgres: true,
        durable: true,
    };
    // Declared first, so dropped last: the services stop before their NATS.
    let cluster = if topology.nats_nodes > 1 {
        progress(&label, "starting the NATS cluster");
        Some(NatsCluster::start().await?)
    } else {
        None
    };
    let env = match &cluster {
        Some(cluster) => TestEnv::on_cluster_with(&name, cluster, durable_postgres).await,
        None => {
            TestEnv::with_private(
                &name,
                Private {
                    nats: true,
                    ..durable_postgres
                },
            )
            .await
        }
    };
    let fleet = Fleet::start(env, mode, topology.instances).await;
    let rewards_db = fleet.env.rewards_db().await;
    full_speed(&fleet.env, &fleet.order_urls(), &rewards_db, config, &label).await
}
