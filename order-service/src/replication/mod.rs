//! Change data capture through PostgreSQL logical replication: the machinery
//! shared by the `cdc` pattern (events from `orders`) and the outbox relayed
//! by CDC (events from `outbox`).
//!
//! # Layout
//! - [`reader`]: streams a slot with the built-in `pgoutput` plugin, turns
//!   committed transactions into events through a [`Capture`], publishes
//!   them, and confirms the slot position only after every PubAck.
//! - [`slot`]: the slot, remembered in order-service's database and checked
//!   against that memory at start-up; status, heartbeats, drain markers.
//! - [`publication`]: the publication, checked (and repaired) at start-up.
//! - `dead_letter`: rows that form no event, filed with the reason and counted.
//! - [`retire`]: draining a slot a switch leaves behind, then dropping it.
//! - [`pgoutput`]: the Relation and Insert messages, decoded.
//!
//! The replication protocol itself comes from `pgwire-replication`, a young
//! crate pinned exactly and used in [`reader`] only.

mod dead_letter;
pub mod pgoutput;
pub mod publication;
pub mod reader;
pub mod retire;
pub mod slot;

use std::collections::HashMap;

use anyhow::bail;

pub use reader::{CdcSettings, Reader};

/// The prefix of the transactional logical decoding message that carries a
/// transaction's trace context to the reader, beside its rows: the trace
/// the reader's publishes continue.
pub const TRACE_MESSAGE_PREFIX: &str = "order_events.traceparent";

/// What change data capture works with: the database it streams and keeps
/// its slots' memory in, and the broker it publishes to.
#[derive(Clone)]
pub struct Connections {
    pub pool: sqlx::PgPool,
    /// For the replication connection, which sqlx's pool cannot lend.
    pub database_url: String,
    pub publisher: shared_events::jetstream::Publisher,
    pub names: shared_events::Names,
}

/// Settings of change data capture, for the `cdc` mode and the CDC outbox relay.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "replication")]
#[command(next_help_heading = "Change data capture")]
pub struct Args {
    /// Prefix of the replication slot names (`<prefix>_orders`,
    /// `<prefix>_outbox`); default: the database's name. Slots are per
    /// server, so two deployments on one PostgreSQL need different prefixes.
    #[arg(long = "cdc-slot", env = "CDC_SLOT")]
    pub slot_prefix: Option<String>,
    /// How often the reader writes a heartbeat to the WAL and checks its slot.
    #[arg(long = "cdc-heartbeat-interval", env = "CDC_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = service_kit::duration::parse)]
    pub heartbeat_interval: std::time::Duration,
    /// Batches of committed transactions whose PubAcks may be awaited at
    /// once. While that many are on their way, further commits gather into
    /// the next batch: fewer means larger batches under load.
    #[arg(
        long = "cdc-max-in-flight",
        env = "CDC_MAX_IN_FLIGHT",
        default_value_t = 4
    )]
    pub max_in_flight: usize,
}

impl Args {
    /// The reader's settings for the slot `<prefix>_<label>` (the prefix
    /// defaults to the database's name) and the publication
    /// `order_events_<label>`.
    pub async fn settings(
        &self,
        to: &Connections,
        label: &'static str,
    ) -> anyhow::Result<CdcSettings> {
        let slot = match &self.slot_prefix {
            Some(prefix) => format!("{prefix}_{label}"),
            None => slot::default_name(&to.pool, label).await?,
        };
        anyhow::ensure!(
            slot::valid_identifier(&slot),
            "slot name {slot:?}: use lower-case letters, digits and '_'"
        );
        Ok(CdcSettings {
            database_url: to.database_url.clone(),
            slot,
            publication: format!("order_events_{label}"),
            heartbeat_interval: self.heartbeat_interval,
            max_in_flight: self.max_in_flight,
            crash_point: "cdc_before_confirm",
            label,
            names: to.names.clone(),
        })
    }

    /// Retires every slot of `label` that order-service remembers but
    /// `keep` (the one the configuration about to serve streams): what a
    /// switch away from that capture left behind ([`retire`]).
    pub async fn retire_left<C: Capture>(
        &self,
        to: &Connections,
        label: &'static str,
        keep: Option<&str>,
        capture: impl Fn() -> C,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<()> {
        let remembered = crate::db::cdc_slots::all(&mut *to.pool.acquire().await?).await?;
        let left = remembered
            .into_iter()
            .filter(|slot| slot.label == label && Some(slot.slot_name.as_str()) != keep);
        for slot in left {
            if slot.drained_at.is_some() {
                retire::drop_drained(&to.pool, &slot.slot_name, deadline).await?;
                continue;
            }
            tracing::info!(slot = %slot.slot_name, "draining the replication slot a switch left behind");
            let settings = CdcSettings {
                slot: slot.slot_name,
                publication: slot.publication,
                ..self.settings(to, label).await?
            };
            Reader::new(to.pool.clone(), to.publisher.clone(), settings, capture())
                .retire(deadline)
                .await?;
        }
        Ok(())
    }
}

/// An event to publish, derived from captured rows.
pub use shared_events::jetstream::Outgoing;

/// Captured rows that cannot form an event: they go to the dead-letter
/// stream with the reason, and are counted per table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: String,
    pub payload: Vec<u8>,
    /// Rows per table.
    pub rows: Vec<(&'static str, u64)>,
}

/// What one pattern makes of the rows its publication captures.
pub trait Capture: Send + 'static {
    /// The tables the publication covers.
    fn tables(&self) -> &'static [&'static str];
    /// A table's shape; an error stops the reader (a shape it does not know).
    fn relation(&mut self, relation: &pgoutput::Relation) -> anyhow::Result<()>;
    /// A row inserted by the open transaction.
    fn insert(&mut self, relation_id: u32, values: Vec<Option<String>>) -> anyhow::Result<()>;
    /// The open transaction committed: its events, in order. `traceparent`
    /// is the trace context the transaction logged for its events, if any.
    fn commit(&mut self, traceparent: Option<String>) -> anyhow::Result<Vec<Outgoing>>;
    /// Rows of the transaction just committed that could not form an event.
    fn rejected(&mut self) -> Option<Rejected> {
        None
    }
    /// Forget a transaction that will be replayed (the session ended).
    fn reset(&mut self);
}

/// Which column of a known table is where, checked against the exact column
/// sets of the versions we map: a changed table stops capture loudly instead of
/// producing events of a shape nobody agreed on.
#[derive(Debug, Default)]
pub struct Shapes {
    tables: HashMap<u32, (String, HashMap<String, usize>)>,
}

impl Shapes {
    /// Records `relation` if its table is in `known` (table name, exact
    /// columns). A table may be listed once per shape it had: a slot decodes
    /// each change with the table as it was when the change was written, so
    /// WAL from before a migration comes with the shape from before it.
    pub fn learn(
        &mut self,
        relation: &pgoutput::Relation,
        known: &[(&str, &[&str])],
    ) -> anyhow::Result<()> {
        let shapes: Vec<&[&str]> = known
            .iter()
            .filter(|(name, _)| *name == relation.name)
            .map(|(_, columns)| *columns)
            .collect();
        if shapes.is_empty() {
            return Ok(());
        }
        let mut actual: Vec<&str> = relation.columns.iter().map(String::as_str).collect();
        actual.sort_unstable();
        let matches = |columns: &&[&str]| {
            let mut expected: Vec<&str> = columns.to_vec();
            expected.sort_unstable();
            expected == actual
        };
        if !shapes.iter().any(matches) {
            bail!(
                "table {}.{} has columns {:?}; change capture maps exactly {}: \
                 update the mapping (and the event's schema version) before changing the table",
                relation.namespace,
                relation.name,
                relation.columns,
                shapes
                    .iter()
                    .map(|columns| format!("{columns:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
        }
        let index = relation
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        self.tables
            .insert(relation.id, (relation.name.clone(), index));
        Ok(())
    }

    /// The table of `relation_id` and a reader of its row's columns.
    pub fn row<'a>(
        &'a self,
        relation_id: u32,
        values: &'a [Option<String>],
    ) -> anyhow::Result<(&'a str, Row<'a>)> {
        let (table, index) = self.tables.get(&relation_id).ok_or_else(|| {
            anyhow::anyhow!("insert into relation {relation_id} before its Relation message")
        })?;
        Ok((table, Row { index, values }))
    }
}

/// One captured row, read by column name.
pub struct Row<'a> {
    index: &'a HashMap<String, usize>,
    values: &'a [Option<String>],
}

impl Row<'_> {
    /// The text of a non-null column, parsed.
    pub fn get<T: std::str::FromStr>(&self, column: &str) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.text(column)?;
        text.parse()
            .map_err(|e| anyhow::anyhow!("column {column} = {text:?}: {e}"))
    }

    /// The text of a column that may be NULL.
    pub fn optional_text(&self, column: &str) -> anyhow::Result<Option<&str>> {
        let i = self
            .index
            .get(column)
            .ok_or_else(|| anyhow::anyhow!("column {column} is missing"))?;
        Ok(self.values.get(*i).and_then(|v| v.as_deref()))
    }

    /// The text of a non-null column.
    pub fn text(&self, column: &str) -> anyhow::Result<&str> {
        self.index
            .get(column)
            .and_then(|&i| self.values.get(i))
            .and_then(|v| v.as_deref())
            .ok_or_else(|| anyhow::anyhow!("column {column} is missing or NULL"))
    }
}
