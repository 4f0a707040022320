//! One mode deployed the way a cluster runs it: several instances of
//! order-service and of rewards-service on one [`TestEnv`], each on the
//! address it bound first and keeps across a restart, and the verdict on
//! what became of the orders the clients were told about.

use serde::Serialize;

use crate::api::metric_sum;
use crate::clients::{Answer, order_ids};
use crate::clients::{Clients, Load};
use crate::converge::{converge, tally};
use crate::env::TestEnv;
use crate::mode::Mode;
use crate::service::Service;
use crate::verdict::Tally;
use crate::wait::{CONVERGE, eventually};

/// A mode's services, `instances` of each.
pub struct Fleet {
    pub mode: Mode,
    pub env: TestEnv,
    orders: Vec<Instance>,
    rewards: Vec<Instance>,
    /// An order-service instance was killed: its count of publishes is gone.
    publisher_lost: bool,
}

struct Instance {
    /// `host:port`: a free port at the first start, kept for restarts.
    addr: Option<String>,
    service: Option<Service>,
}

impl Instance {
    fn new() -> Self {
        Self {
            addr: None,
            service: None,
        }
    }

    fn listen_addr(&self) -> &str {
        self.addr.as_deref().unwrap_or("127.0.0.1:0")
    }

    fn started(&mut self, service: Service) {
        let url = service.url();
        self.addr = Some(url.strip_prefix("http://").unwrap_or(url).to_owned());
        self.service = Some(service);
    }

    fn url(&self) -> String {
        format!("http://{}", self.listen_addr())
    }
}

impl Fleet {
    /// Starts `instances` of each service in `mode` on `env`, one after
    /// another (in CDC mode the first holds the slot, the others stand by).
    pub async fn start(env: TestEnv, mode: Mode, instances: usize) -> Self {
        let mut fleet = Self {
            mode,
            env,
            orders: (0..instances).map(|_| Instance::new()).collect(),
            rewards: (0..instances).map(|_| Instance::new()).collect(),
            publisher_lost: false,
        };
        for i in 0..instances {
            fleet.start_order_service(i).await;
            fleet.start_rewards_service(i).await;
        }
        fleet
    }

    /// Starts order-service instance `i` (again) on its address.
    pub async fn start_order_service(&mut self, i: usize) {
        let service = self
            .env
            .order_service(self.mode)
            .set("LISTEN_ADDR", self.orders[i].listen_addr())
            .start()
            .await;
        self.orders[i].started(service);
    }

    /// Starts rewards-service instance `i` (again) on its address.
    pub async fn start_rewards_service(&mut self, i: usize) {
        let service = self
            .env
            .rewards_service()
            .set("LISTEN_ADDR", self.rewards[i].listen_addr())
            .start()
            .await;
        self.rewards[i].started(service);
    }

    /// SIGKILL of order-service instance `i`.
    pub async fn kill_order_service(&mut self, i: usize) {
        if let Some(mut service) = self.orders[i].service.take() {
            service.kill().await;
            self.publisher_lost = true;
        }
    }

    /// SIGKILL of rewards-service instance `i`.
    pub async fn kill_rewards_service(&mut self, i: usize) {
        if let Some(mut service) = self.rewards[i].service.take() {
            service.kill().await;
        }
    }

    /// The addresses of the order-service instances, running or not.
    pub fn order_urls(&self) -> Vec<String> {
        self.orders.iter().map(Instance::url).collect()
    }

    fn running(instances: &[Instance]) -> impl Iterator<Item = &Service> {
        instances.iter().filter_map(|i| i.service.as_ref())
    }

    /// Clients placing `orders` orders at `rate` per second over the
    /// order-service instances, with keys `{label}-{i}`.
    pub fn clients(&self, orders: usize, rate: f64, label: &str) -> Clients {
        Clients::start(
            &self.env.http,
            &self.order_urls(),
            &Load {
                orders,
                rate,
                label: label.to_owned(),
            },
        )
    }

    /// The PubAcks the order-service instances counted, new and duplicate,
    /// once they have nothing left to publish; `None` once an instance was
    /// killed, taking its counts with it.
    pub async fn published(&self) -> Option<Published> {
        if self.publisher_lost {
            return None;
        }
        self.wait_for_publishers().await;
        let mut published = Published::default();
        for service in Self::running(&self.orders) {
            let (http, url) = (&self.env.http, service.url());
            let all = metric_sum(http, url, "order_events_published_total").await;
            let duplicates = metric_sum(http, url, "order_events_publish_duplicates_total").await;
            published.new += all - duplicates;
            published.duplicates += duplicates;
        }
        Some(published)
    }

    /// Waits until the publishers have nothing left: the outbox is empty and
    /// every replication slot has confirmed the WAL written so far. (An
    /// event can be credited while its publisher still retries it: its
    /// first publish was stored, its PubAck lost.)
    async fn wait_for_publishers(&self) {
        let orders = self.env.orders_db().await;
        let written: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&orders)
            .await
            .expect("reading the WAL position");
        eventually("the publishers to finish", CONVERGE, || async {
            let outbox = crate::api::count(&orders, "outbox").await;
            let behind: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_replication_slots
                 WHERE database = current_database()
                   AND (confirmed_flush_lsn IS NULL OR confirmed_flush_lsn < $1::pg_lsn)",
            )
            .bind(&written)
            .fetch_one(&orders)
            .await
            .ok()?;
            (outbox == 0 && behind == 0).then_some(())
        })
        .await;
    }

    /// Waits until every order of `acknowledged` is credited and the
    /// consumers have nothing in flight, then counts.
    pub async fn verdict(&self, answers: &[Answer]) -> anyhow::Result<Verdict> {
        let distinct = order_ids(answers);
        converge(&self.env, &distinct, self.mode).await?;
        let orders = Self::running(&self.orders)
            .next()
            .ok_or_else(|| anyhow::anyhow!("no order-service instance runs"))?;
        let rewards = Self::running(&self.rewards)
            .next()
            .ok_or_else(|| anyhow::anyhow!("no rewards-service instance runs"))?;
        let (_, findings) = crate::api::audit(&self.env, orders.url(), rewards.url(), &[]).await?;
        Ok(Verdict {
            mode: self.mode.name(),
            acknowledged: distinct.len(),
            tally: tally(&self.env, answers).await?,
            stream_messages: self.env.stream_messages().await,
            published: self.published().await,
            audit_consistent: findings["consistent"] == true,
        })
    }
}

/// The publishers' own count of PubAcks.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Published {
    /// For events the stream stored anew.
    pub new: u64,
    /// For events it already had: the retry of a publish whose PubAck was
    /// lost (in a failover, say), or that was acknowledged but not yet
    /// marked done when its publisher failed.
    pub duplicates: u64,
}

/// What became of one mode's acknowledged orders.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub mode: &'static str,
    /// Distinct orders the clients were told about (201, 202, or 200 for a
    /// replay).
    pub acknowledged: usize,
    #[serde(flatten)]
    pub tally: Tally,
    /// Messages in the mode's stream: the broker's own count.
    pub stream_messages: u64,
    /// The publishers' own count ([`Fleet::published`]).
    pub published: Option<Published>,
    pub audit_consistent: bool,
}

impl Verdict {
    /// Asserts the exact outcome: `n` orders acknowledged, each credited
    /// once with the right points, every balance the sum of its credits,
    /// `n` events in the stream, and the audit consistent. The publishers'
    /// count is bounded on both sides, not exact: a publisher whose PubAck
    /// was lost (in a failover, say) publishes again and hears "duplicate",
    /// so the events it counts new are at most `n`. A relay or CDC reader
    /// marks an event done only after its PubAck, so with the duplicates
    /// they count at least `n`; self-read may instead answer a retry from
    /// the projection of an event whose PubAck was lost.
    pub fn assert_exact(&self, n: usize) {
        let mode = self.mode;
        assert_eq!(self.acknowledged, n, "{mode}: acknowledged");
        assert_eq!(self.tally, Tally::exact(n), "{mode}");
        assert_eq!(self.stream_messages, n as u64, "{mode}: stream messages");
        if let Some(published) = self.published {
            let n = n as u64;
            assert!(
                published.new <= n,
                "{mode}: {n} events, published: {published:?}"
            );
            if mode != Mode::SelfRead.name() {
                assert!(
                    published.new + published.duplicates >= n,
                    "{mode}: {n} events, published: {published:?}"
                );
            }
        }
        assert!(self.audit_consistent, "{mode}: the audit");
    }

    /// A row of the fault table in `docs/cluster.md`.
    pub fn row(&self, fault: &str) -> String {
        let published = self.published.map_or_else(
            || "n/a (instance killed)".to_owned(),
            |p| format!("{} + {} dup.", p.new, p.duplicates),
        );
        format!(
            "| {fault} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.mode,
            self.acknowledged,
            self.tally.credited_once,
            self.tally.lost,
            self.tally.doubled,
            self.stream_messages,
            published,
            if self.audit_consistent {
                "consistent"
            } else {
                "INCONSISTENT"
            }
        )
    }
}
