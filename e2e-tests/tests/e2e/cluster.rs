//! Node failures on a three-node JetStream cluster (streams and consumers
//! on all three, `STREAM_REPLICAS=3`), with two instances of order-service
//! and two of rewards-service per mode. Each test runs the outbox, CDC and
//! self-read side by side on one cluster, each in its own databases and
//! streams, with clients that spread orders over both instances and retry
//! each with its key until it is acknowledged; the fault strikes while they
//! place orders. Then, per mode, exactly: every acknowledged order credited
//! once with its points, each balance the sum of its credits, as many events
//! in the stream as orders and as many counted by the publishers, and the
//! audit consistent. The rows printed are the table of `docs/cluster.md`.
//!
//! The clusters take turns (each is 15 processes), while the other tests
//! run beside them.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use harness::api::{assert_credited_exactly, get_json, order, place_ok, place_order};
use harness::clients::{Answer, request};
use harness::cluster::{self, NODES, NatsCluster};
use harness::fleet::{Fleet, Verdict};
use harness::{CONVERGE, Mode, TestEnv, eventually};
use shared_events::Names;

const MODES: [Mode; 3] = [Mode::Outbox, Mode::Cdc, Mode::SelfRead];
/// Orders per mode, and their rate: about ten seconds of orders, into
/// which each fault falls.
const ORDERS: usize = 300;
const RATE: f64 = 30.0;

/// A cluster with every mode's fleet on it, its streams led by node 0.
struct World {
    cluster: NatsCluster,
    fleets: Vec<Fleet>,
}

impl World {
    async fn start(test: &str) -> Self {
        let cluster = NatsCluster::start().await.expect("starting the cluster");
        let mut fleets = Vec::new();
        for mode in MODES {
            let name = format!("{test}_{}", mode.name().replace('-', "_"));
            let env = TestEnv::on_cluster(&name, &cluster).await;
            fleets.push(Fleet::start(env, mode, 2).await);
        }
        let world = Self { cluster, fleets };
        world.lead_every_stream(0).await;
        world
    }

    fn streams(&self) -> Vec<String> {
        self.fleets
            .iter()
            .map(|fleet| {
                Names::new(fleet.env.events_prefix())
                    .expect("a valid prefix")
                    .stream()
                    .to_owned()
            })
            .collect()
    }

    /// Moves the leadership of every mode's stream to node `i`, so that a
    /// fault of that node strikes each mode's leader.
    async fn lead_every_stream(&self, i: usize) {
        for stream in self.streams() {
            self.cluster.make_leader(&stream, i).await;
        }
    }

    /// Waits until every mode's stream has elected a leader other than
    /// node `i`: the failover a fault of that node forces.
    async fn wait_for_leaders_off(&self, i: usize) {
        for stream in self.streams() {
            eventually(
                &format!("{stream} to elect a leader off node {}", i + 1),
                CONVERGE,
                || async { (self.cluster.leader_of(&stream).await != i).then_some(()) },
            )
            .await;
        }
    }

    /// Places orders in every mode, runs `strike` once a quarter of them
    /// are acknowledged, lets the clients finish, and asserts each mode's
    /// exact outcome.
    async fn survives(&mut self, fault: &str, strike: impl AsyncFnOnce(&mut Self)) {
        let acknowledged = self.place_through(strike).await;
        for verdict in self.judge(fault, acknowledged).await {
            verdict.assert_exact(ORDERS);
        }
    }

    /// The orders each mode acknowledged, placed while `strike` ran.
    async fn place_through(&mut self, strike: impl AsyncFnOnce(&mut Self)) -> Vec<Vec<Answer>> {
        let clients: Vec<_> = self
            .fleets
            .iter()
            .map(|fleet| fleet.clients(ORDERS, RATE, fleet.mode.name()))
            .collect();
        for clients in &clients {
            clients.wait_for(ORDERS / 4).await;
        }
        strike(self).await;
        let mut acknowledged = Vec::new();
        for (fleet, clients) in self.fleets.iter().zip(clients) {
            let (ids, refusals) = clients.finish().await.expect("the clients");
            eprintln!(
                "[{}] answers other than success: {refusals:?}",
                fleet.mode.name()
            );
            acknowledged.push(ids);
        }
        acknowledged
    }

    /// Each mode's verdict on its acknowledged orders, printed as a row of
    /// the fault table.
    async fn judge(&self, fault: &str, acknowledged: Vec<Vec<Answer>>) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        for (fleet, ids) in self.fleets.iter().zip(acknowledged) {
            let verdict = fleet.verdict(&ids).await.expect("the verdict");
            eprintln!("{}", verdict.row(fault));
            verdicts.push(verdict);
        }
        verdicts
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_streams_leader_node_loses_and_doubles_nothing() {
    let _turn = cluster::take_turn().await;
    let mut world = World::start("cluster_kill_leader").await;
    world
        .survives("kill -9 the streams' leader", async |world| {
            world.cluster.kill(0);
            // Down until the others have taken over every stream.
            world.wait_for_leaders_off(0).await;
            world
                .cluster
                .start_again(0)
                .await
                .expect("restarting the node");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_leader_off_for_ten_seconds_loses_and_doubles_nothing() {
    let _turn = cluster::take_turn().await;
    let mut world = World::start("cluster_cut_leader").await;
    if let Err(why) = world.cluster.can_cut() {
        eprintln!("skipped: cutting a node off needs its own network namespace ({why})");
        return;
    }
    world
        .survives("cut the leader off for 10 s", async |world| {
            world.cluster.cut(0).expect("cutting the node off");
            tokio::time::sleep(Duration::from_secs(10)).await;
            world.cluster.heal(0).expect("healing");
            world.cluster.wait_healthy(0).await;
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_the_leader_past_the_ack_wait_loses_and_doubles_nothing() {
    let _turn = cluster::take_turn().await;
    let mut world = World::start("cluster_pause_leader").await;
    // The services' consumers wait 2 s for an ack (the harness's
    // CONSUMER_ACK_WAIT); the node stalls for longer.
    world
        .survives("SIGSTOP the leader for 5 s", async |world| {
            world.cluster.pause(0);
            tokio::time::sleep(Duration::from_secs(5)).await;
            world.cluster.resume(0);
            world.cluster.wait_healthy(0).await;
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_instance_of_each_service_loses_and_doubles_nothing() {
    let _turn = cluster::take_turn().await;
    let mut world = World::start("cluster_kill_instances").await;
    // The first order-service started holds the CDC slot; its standby
    // takes over.
    world
        .survives("kill -9 one instance of each service", async |world| {
            for fleet in &mut world.fleets {
                fleet.kill_order_service(0).await;
                fleet.kill_rewards_service(0).await;
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_the_nodes_loses_and_doubles_nothing() {
    let _turn = cluster::take_turn().await;
    let mut world = World::start("cluster_rolling_restart").await;
    world
        .survives("restart the nodes one by one", async |world| {
            for i in 0..NODES {
                world.cluster.stop(i);
                world
                    .cluster
                    .start_again(i)
                    .await
                    .expect("restarting a node");
            }
        })
        .await;
}

/// Orders placed once each while the majority is down.
const PROBES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_majority_lost_outbox_and_cdc_take_orders_self_read_refuses_and_nothing_is_lost() {
    let _turn = cluster::take_turn().await;
    let mut world = World::start("cluster_majority_lost").await;
    let mut acknowledged = world
        .place_through(async |world| {
            world.cluster.kill(1);
            world.cluster.kill(2);
            for fleet in &world.fleets {
                assert_readiness_without_a_leader(fleet).await;
                let answers = probe(fleet).await;
                if fleet.mode == Mode::SelfRead {
                    // Nothing is acknowledged: 503 when nothing could be
                    // sent, 504 (outcome unknown: retry with the key) when
                    // the publish went unanswered.
                    assert!(
                        answers.iter().all(|s| *s == 503 || *s == 504),
                        "self-read answered {answers:?}"
                    );
                } else {
                    assert_eq!(answers, [201; PROBES], "{}", fleet.mode.name());
                }
            }
            world
                .cluster
                .start_again(1)
                .await
                .expect("restarting a node");
            world
                .cluster
                .start_again(2)
                .await
                .expect("restarting a node");
        })
        .await;
    // With the nodes back, the probes are placed again with their keys:
    // replays where they were stored, new orders where they were not.
    for (fleet, ids) in world.fleets.iter().zip(&mut acknowledged) {
        let (probes, _) = fleet
            .clients(PROBES, RATE, &probe_label(fleet))
            .finish()
            .await
            .expect("the probes");
        ids.extend(probes);
    }
    for verdict in world.judge("two of three nodes down", acknowledged).await {
        verdict.assert_exact(ORDERS + PROBES);
    }
}

/// With the streams leaderless, each order-service instance's readiness
/// says so, and only self-read, which needs the broker to take an order,
/// reports itself not ready.
async fn assert_readiness_without_a_leader(fleet: &Fleet) {
    for url in fleet.order_urls() {
        let ready = eventually("readiness to see no leader", CONVERGE, || {
            let (http, url) = (fleet.env.http.clone(), url.clone());
            async move {
                let ready = get_json(&http, &format!("{url}/readyz")).await;
                (ready["checks"]["stream_leader"] == false).then_some(ready)
            }
        })
        .await;
        let expected = if fleet.mode == Mode::SelfRead {
            "not_ready"
        } else {
            "ready"
        };
        assert_eq!(ready["status"], expected, "{}", fleet.mode.name());
    }
}

fn probe_label(fleet: &Fleet) -> String {
    format!("probe-{}", fleet.mode.name())
}

/// Places [`PROBES`] orders once each, as the clients would place them
/// (the same bodies and keys), and returns the statuses (0: no answer).
async fn probe(fleet: &Fleet) -> Vec<u16> {
    let urls = fleet.order_urls();
    let mut answers = Vec::new();
    for i in 0..PROBES {
        let (body, key) = request(&probe_label(fleet), i);
        let answer = place_order(&fleet.env.http, &urls[i % urls.len()], &body, Some(&key))
            .await
            .map_or(0, |r| r.status().as_u16());
        answers.push(answer);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_stream_replicas_moves_the_stream_and_its_consumers_onto_every_node() {
    let _turn = cluster::take_turn().await;
    let cluster = NatsCluster::start().await.expect("starting the cluster");
    let env = TestEnv::on_cluster("cluster_raise_replicas", &cluster).await;
    let names = Names::new(env.events_prefix()).expect("a valid prefix");
    let (orders, rewards) = (
        env.order_service(Mode::Outbox).set("STREAM_REPLICAS", "1"),
        env.rewards_service().set("STREAM_REPLICAS", "1"),
    );
    let (mut orders, mut rewards) = (orders.start().await, rewards.start().await);
    place_ok(&env.http, orders.url(), &order("ana", &[("SKU-1", 1, 500)])).await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(copies(&env, names.stream(), None).await, (1, 1));

    orders.terminate(Duration::from_secs(10)).await;
    rewards.terminate(Duration::from_secs(10)).await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let _rewards = env.rewards_service().start().await;
    // The stream is updated at start-up, and its durable consumer with it
    // (the server does not carry a consumer along with its stream); the
    // new copies are placed by the cluster after the update returns.
    for consumer in [None, Some("rewards")] {
        eventually("three copies on three nodes", CONVERGE, || async {
            (copies(&env, names.stream(), consumer).await == (3, 3)).then_some(())
        })
        .await;
    }
    // The one update that moved the stream kept its atomic batches.
    assert!(takes_atomic_batches(&env, names.stream()).await);
    place_ok(&env.http, orders.url(), &order("ana", &[("SKU-1", 1, 700)])).await;
    assert_credited_exactly(&env, 2).await;
}

/// Whether `stream` has `allow_atomic` set, read as the server's JSON (the
/// client's typed configuration does not know the option).
async fn takes_atomic_batches(env: &TestEnv, stream: &str) -> bool {
    let info: serde_json::Value = env
        .jetstream()
        .await
        .request(format!("STREAM.INFO.{stream}"), &serde_json::json!({}))
        .await
        .expect("the stream's info");
    info["config"]["allow_atomic"] == serde_json::Value::Bool(true)
}

/// The replicas a stream (or its durable consumer) is configured with, and
/// the copies the cluster keeps (its leader and the followers it reports),
/// once every follower is current.
async fn copies(env: &TestEnv, stream: &str, consumer: Option<&str>) -> (usize, usize) {
    let js = env.jetstream().await;
    eventually("every copy current", CONVERGE, || async {
        let (configured, cluster) = match consumer {
            None => {
                let info = js.get_stream(stream).await.ok()?.info().await.ok()?.clone();
                (info.config.num_replicas, info.cluster?)
            }
            Some(durable) => {
                let mut consumer: PullConsumer =
                    js.get_consumer_from_stream(durable, stream).await.ok()?;
                let info = consumer.info().await.ok()?.clone();
                (info.config.num_replicas, info.cluster?)
            }
        };
        cluster.leader.as_ref()?;
        let followers = cluster.replicas.iter().filter(|r| r.current).count();
        (followers == cluster.replicas.len()).then_some((configured, followers + 1))
    })
    .await
}
