//! The CDC reader: one replication session at a time on one slot.
//!
//! - Events of a transaction are published once its Commit arrived, in one
//!   batch with those of the transactions committed beside it: a batch is
//!   sent as soon as fewer than `max_in_flight` batches await their PubAcks,
//!   so under light load each transaction goes alone, and under heavy load
//!   the commits that arrive while batches are on their way gather into the
//!   next one (an atomic batch: one flush on the broker for all of them). The
//!   slot is confirmed at a batch's last end LSN only after every PubAck of
//!   that batch and of all before it (batches are settled in order).
//! - Idle: with no transaction open and nothing in flight, the position of a
//!   keepalive or of our own heartbeat message is confirmed, so WAL retained
//!   by the slot stays bounded while other tables are busy.
//! - Every position is written to the slot's memory (`cdc_slots`) before it
//!   is confirmed, batches settled together in one write: a slot found past
//!   that memory at start-up was moved by someone else, and is refused.
//! - One reader per slot: PostgreSQL lets one session hold a slot; a second
//!   instance gets SQLSTATE 55006 and waits as a standby, retrying until the
//!   active reader dies.
//! - A slot whose WAL was removed (`wal_status = 'lost'`) or that vanished
//!   stops the reader with an error naming the resync command: capturing on
//!   would silently skip orders.
//! - Rows that cannot form an event (order lines without their order in the
//!   same transaction) are dead-lettered with the reason and counted, never
//!   dropped silently.
//! - Shutdown drains the acks in flight, confirms, and waits until that
//!   position reached the server before closing the session.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use futures::stream::FuturesOrdered;
use futures::{FutureExt as _, StreamExt as _};
use pgwire_replication::{
    Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent,
};
use service_kit::crash::crash_point;
use service_kit::trace::PublishSpans;
use shared_events::Names;
use shared_events::jetstream::{self, PublishError};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Capture, pgoutput, publication, slot};
use crate::db::cdc_slots;

/// How a reader is set up.
#[derive(Debug, Clone)]
pub struct CdcSettings {
    /// Where to stream from (a TCP `postgres://` URL).
    pub database_url: String,
    pub slot: String,
    pub publication: String,
    /// How often the reader writes a heartbeat message and reads the slot's status.
    pub heartbeat_interval: Duration,
    /// Batches of committed transactions whose PubAcks may be awaited at once.
    pub max_in_flight: usize,
    /// Crash point between the PubAcks and the confirmation.
    pub crash_point: &'static str,
    /// Label of the reader's metrics (`orders` or `outbox`), remembered with the slot.
    pub label: &'static str,
    /// Where events and dead letters go.
    pub names: Names,
}

/// How often a standby asks for the slot again.
const STANDBY_POLL: Duration = Duration::from_millis(500);
/// How often the replication client reports the confirmed position.
const STATUS_INTERVAL: Duration = Duration::from_millis(200);
/// The longest one step of a session may take — sending a batch, writing
/// the slot's memory, dead-lettering — before the session is retried: a
/// step that hangs (a broker connection that came back without answering, a
/// database that stopped answering) becomes a logged retry, never a reader
/// that silently stops publishing.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest silence of the replication stream that restarts a session.
const SILENCE_FLOOR: Duration = Duration::from_secs(10);

/// `step` within [`STEP_TIMEOUT`], or a retry naming `what`.
async fn bounded<T>(
    what: &str,
    step: impl Future<Output = Result<T, SessionError>>,
) -> Result<T, SessionError> {
    tokio::time::timeout(STEP_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| {
            Err(SessionError::Retry(anyhow::anyhow!(
                "{what} did not finish within {STEP_TIMEOUT:?}"
            )))
        })
}

type InFlight = Pin<Box<dyn Future<Output = Result<Lsn, PublishError>> + Send>>;

pub(super) enum SessionError {
    /// Another session holds the slot (SQLSTATE 55006): stand by.
    SlotBusy,
    /// Reconnect after a pause.
    Retry(anyhow::Error),
    /// Stop the reader.
    Fatal(anyhow::Error),
}

/// The SQLSTATE of a server error. The replication client hands server
/// errors over as text ending in `SQLSTATE xxxxx`.
fn sqlstate(error: &PgWireError) -> Option<&str> {
    let PgWireError::Server(text) = error else {
        return None;
    };
    let code = text.split("SQLSTATE ").nth(1)?.get(..5)?;
    code.chars()
        .all(|c| c.is_ascii_alphanumeric())
        .then_some(code)
}

fn classify(slot_name: &str, error: PgWireError) -> SessionError {
    let text = error.to_string();
    let code = sqlstate(&error);
    if code == Some(slot::OBJECT_IN_USE) {
        SessionError::SlotBusy
    } else if code == Some(slot::UNDEFINED_OBJECT) && text.contains("publication") {
        // The slot decodes with the catalog as of each change, so a
        // publication recreated later does not help it past this point.
        SessionError::Fatal(anyhow::anyhow!(
            "the publication of replication slot {slot_name} vanished ({text}); the slot \
             cannot decode past that point. Recover: stop every order-service, drop the slot \
             (SELECT pg_drop_replication_slot('{slot_name}')), run `{}`, then start \
             order-service again",
            slot::RESYNC_COMMAND
        ))
    } else if code == Some(slot::UNDEFINED_OBJECT) {
        SessionError::Fatal(slot::resync_needed(
            slot_name,
            &format!("vanished while order-service was streaming it ({text})"),
        ))
    } else {
        SessionError::Retry(error.into())
    }
}

pub struct Reader<C> {
    pub(super) pool: PgPool,
    pub(super) publisher: jetstream::Publisher,
    pub(super) settings: CdcSettings,
    capture: C,
    /// The last sign of life of the running session.
    alive: Alive,
}

/// When a session last confirmed a position: a healthy one does at least at
/// every heartbeat when idle, and at every batch when busy.
#[derive(Clone)]
struct Alive {
    since: std::time::Instant,
    millis: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Alive {
    fn new() -> Self {
        Self {
            since: std::time::Instant::now(),
            millis: Default::default(),
        }
    }

    fn mark(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.millis.load(std::sync::atomic::Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }

    /// Completes once the session has confirmed nothing for `limit`: waits
    /// until the earliest moment that can be true, and looks again.
    async fn stalled(&self, limit: Duration) {
        loop {
            let quiet = self.quiet_for();
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }
}

impl<C: Capture> Reader<C> {
    /// Checks (and repairs) the publication, and creates and remembers the
    /// slot, or checks the remembered one is intact. Call it before any
    /// write that must be captured: a slot sees only what comes after it.
    pub async fn prepare(
        pool: PgPool,
        publisher: jetstream::Publisher,
        settings: CdcSettings,
        capture: C,
    ) -> anyhow::Result<Self> {
        // Refuse a connection this build cannot make before anything is created.
        replication_config(&settings)?;
        publication::ensure(&pool, &settings.publication, capture.tables()).await?;
        slot::ensure_remembered(&pool, &settings.slot, settings.label, &settings.publication)
            .await?;
        Ok(Self::new(pool, publisher, settings, capture))
    }

    /// A reader of an existing slot, with no set-up (to drain it).
    pub fn new(
        pool: PgPool,
        publisher: jetstream::Publisher,
        settings: CdcSettings,
        capture: C,
    ) -> Self {
        Self {
            pool,
            publisher,
            settings,
            capture,
            alive: Alive::new(),
        }
    }

    /// Captures until `shutdown` is cancelled. Returns an error only when
    /// capture cannot go on safely (lost or vanished slot, unknown table shape).
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // A standby reports 0 from the start, not nothing.
        service_kit::meters::cdc_reader_active(self.settings.label, false);
        tracing::info!(slot = %self.settings.slot, "CDC reader started");
        let watch = watch_slot(self.pool.clone(), self.settings.clone(), shutdown.clone());
        tokio::pin!(watch);
        let mut pauses = service_kit::startup::pauses(Duration::from_secs(5));
        let mut standing_by = false;
        loop {
            if shutdown.is_cancelled() {
                tracing::info!(slot = %self.settings.slot, "CDC reader stopped");
                return Ok(());
            }
            let alive = self.alive.clone();
            alive.mark();
            // Every wait of a session is bounded or watched from inside; this
            // is the last guard, from outside, against one that still stops
            // confirming (its future is dropped, which ends its connection).
            let limit = self.silence() * 2;
            let session = self.session(&shutdown, None);
            let outcome = tokio::select! {
                biased;
                lost = &mut watch => return lost,
                outcome = session => outcome,
                () = alive.stalled(limit) => Err(SessionError::Retry(anyhow::anyhow!(
                    "the session confirmed nothing for {limit:?}, though a heartbeat is \
                     confirmed when idle: starting it again"
                ))),
            };
            let wait = match outcome {
                Ok(_) => {
                    pauses = service_kit::startup::pauses(Duration::from_secs(5));
                    continue;
                }
                Err(SessionError::Fatal(error)) => return Err(error),
                Err(SessionError::SlotBusy) => {
                    if !standing_by {
                        tracing::info!(slot = %self.settings.slot, "slot held by another reader: standing by");
                        standing_by = true;
                    }
                    STANDBY_POLL
                }
                Err(SessionError::Retry(error)) => {
                    standing_by = false;
                    let pause = pauses.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(slot = %self.settings.slot, error = format!("{error:#}"), retry_in = ?pause, "CDC session ended");
                    pause
                }
            };
            tokio::select! {
                biased;
                lost = &mut watch => return lost,
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One replication session, until shutdown, an error, or (with `until`)
    /// the drain marker carrying that token; true when the marker was reached.
    pub(super) async fn session(
        &mut self,
        shutdown: &CancellationToken,
        until: Option<&str>,
    ) -> Result<bool, SessionError> {
        let config = replication_config(&self.settings).map_err(SessionError::Fatal)?;
        let slot_name = self.settings.slot.clone();
        let classify = |e| classify(&slot_name, e);
        let mut client = ReplicationClient::connect(config).await.map_err(classify)?;
        client.wait_started().await.map_err(classify)?;
        tracing::info!(slot = %self.settings.slot, "CDC reader streaming");
        service_kit::meters::cdc_reader_active(self.settings.label, true);
        self.capture.reset();
        let streamed = self.stream(&mut client, shutdown, until).await;
        service_kit::meters::cdc_reader_active(self.settings.label, false);
        match streamed {
            Ok((confirmed, reached)) => {
                finish(&mut client, confirmed).await;
                Ok(reached)
            }
            Err(error) => {
                client.abort();
                Err(error)
            }
        }
    }

    /// Streams until shutdown or the drain marker `until` (then drains what
    /// is in flight) or an error. Returns the last position confirmed, and
    /// whether the marker was reached.
    async fn stream(
        &mut self,
        client: &mut ReplicationClient,
        shutdown: &CancellationToken,
        until: Option<&str>,
    ) -> Result<(Option<Lsn>, bool), SessionError> {
        let retry = |e: PublishError| SessionError::Retry(e.into());
        let slot_name = self.settings.slot.clone();
        let classify = |e| classify(&slot_name, e);
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut gathered = Gathered::default();
        let mut in_transaction = false;
        // The trace context the open transaction logged for its events.
        let mut traceparent = None;
        let mut confirmed = None;
        // The highest position written to the slot's memory this session.
        let mut memory = Lsn::ZERO;
        let mut marker = None;
        // A heartbeat reaches the stream every `heartbeat_interval`: a
        // session that hears nothing for much longer is broken, although its
        // connection looks alive (seen after a PostgreSQL crash followed at
        // once by a broker restart), and is started again.
        let silence = self.silence();
        let mut heard = tokio::time::Instant::now();
        loop {
            if in_flight.len() < self.settings.max_in_flight
                && let Some((events, end_lsn)) = gathered.take()
            {
                let sending = async { self.publish(events, end_lsn).await.map_err(retry) };
                in_flight.push_back(bounded("sending a batch", sending).await?);
            }
            tokio::select! {
                biased;
                Some(done) = in_flight.next() => {
                    let mut lsn = done.map_err(retry)?;
                    // Batches settled meanwhile are confirmed in the same step.
                    while let Some(Some(done)) = in_flight.next().now_or_never() {
                        lsn = done.map_err(retry)?;
                    }
                    crash_point(self.settings.crash_point);
                    bounded("confirming", self.confirm(client, &mut memory, lsn)).await?;
                    confirmed = Some(lsn);
                }
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(heard + silence), if gathered.has_room() => {
                    return Err(SessionError::Retry(anyhow::anyhow!(
                        "nothing came over the replication stream for {silence:?}, though a \
                         heartbeat is written every {:?}: reconnecting",
                        self.settings.heartbeat_interval
                    )));
                }
                event = client.recv(), if gathered.has_room() => {
                    heard = tokio::time::Instant::now();
                    let event = event
                        .map_err(classify)?
                        .ok_or_else(|| SessionError::Retry(anyhow::anyhow!("the replication stream ended")))?;
                    let idle = !in_transaction && in_flight.is_empty() && gathered.is_empty();
                    match event {
                        ReplicationEvent::Begin { .. } => {
                            in_transaction = true;
                            traceparent = None;
                        }
                        ReplicationEvent::XLogData { data, .. } => self.change(&data)?,
                        ReplicationEvent::Message { transactional: true, prefix, content, .. }
                            if prefix == super::TRACE_MESSAGE_PREFIX =>
                        {
                            traceparent = std::str::from_utf8(&content).ok().map(str::to_owned);
                        }
                        ReplicationEvent::Commit { end_lsn, .. } => {
                            in_transaction = false;
                            let events = self
                                .capture
                                .commit(traceparent.take())
                                .map_err(SessionError::Fatal)?;
                            if let Some(rejected) = self.capture.rejected() {
                                let dead_letter = async {
                                    self.dead_letter(rejected, end_lsn).await.map_err(retry)
                                };
                                bounded("dead-lettering", dead_letter).await?;
                            }
                            gathered.add(events, end_lsn);
                        }
                        ReplicationEvent::KeepAlive { wal_end, .. } if idle => {
                            bounded("confirming", self.confirm(client, &mut memory, wal_end)).await?;
                        }
                        ReplicationEvent::Message { transactional: false, lsn, prefix, content } => {
                            // Every transaction that committed before the
                            // marker streamed before it.
                            if until.is_some_and(|token| {
                                prefix == slot::DRAIN_MARKER && content.as_ref() == token.as_bytes()
                            }) {
                                marker = Some(lsn);
                                break;
                            }
                            if idle {
                                bounded("confirming", self.confirm(client, &mut memory, lsn)).await?;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        if let Some((events, end_lsn)) = gathered.take() {
            in_flight.push_back(self.publish(events, end_lsn).await.map_err(retry)?);
        }
        while let Some(done) = in_flight.next().await {
            let lsn = done.map_err(retry)?;
            self.confirm(client, &mut memory, lsn).await?;
            confirmed = Some(lsn);
        }
        if let Some(lsn) = marker {
            self.confirm(client, &mut memory, lsn).await?;
            confirmed = Some(lsn);
        }
        Ok((confirmed, marker.is_some()))
    }

    /// How long a session's stream may bring nothing, not even a heartbeat.
    fn silence(&self) -> Duration {
        (self.settings.heartbeat_interval * 10).max(SILENCE_FLOOR)
    }

    /// Confirms `lsn` on the slot, after writing it to the slot's memory in
    /// order-service's database (unless `memory`, the highest position
    /// written this session, covers it already): in that order, so the slot
    /// never stands past what order-service remembers confirming, and a slot
    /// found past it at the next start was moved by someone else
    /// ([`slot::mismatch`]).
    async fn confirm(
        &self,
        client: &ReplicationClient,
        memory: &mut Lsn,
        lsn: Lsn,
    ) -> Result<(), SessionError> {
        if lsn > *memory {
            let name = &self.settings.slot;
            let mut conn = self.pool.acquire().await.map_err(|e| {
                SessionError::Retry(anyhow::Error::new(e).context("remembering the slot position"))
            })?;
            let remembered = cdc_slots::record_confirmed(&mut conn, name, &lsn.to_pg_string())
                .await
                .map_err(|e| {
                    SessionError::Retry(
                        anyhow::Error::new(e).context("remembering the slot position"),
                    )
                })?;
            if !remembered {
                return Err(SessionError::Fatal(anyhow::anyhow!(
                    "replication slot {name} is no longer remembered (cdc_slots) while \
                     order-service streams it: `{}` ran with order-service up? Stop every \
                     order-service, then start it again",
                    slot::RESYNC_COMMAND
                )));
            }
            *memory = lsn;
        }
        client.update_applied_lsn(lsn);
        self.alive.mark();
        Ok(())
    }

    fn change(&mut self, data: &[u8]) -> Result<(), SessionError> {
        change(&mut self.capture, data).map_err(SessionError::Fatal)
    }

    /// Sends the events of committed transactions as one batch; the returned
    /// future completes with the position to confirm once every PubAck arrived.
    async fn publish(
        &self,
        mut events: Vec<super::Outgoing>,
        end_lsn: Lsn,
    ) -> Result<InFlight, PublishError> {
        let span = tracing::info_span!("cdc_batch", slot = self.settings.label, events = events.len(), end_lsn = %end_lsn);
        service_kit::meters::publish_batch(self.settings.label, events.len());
        let spans = PublishSpans::start(&mut events);
        let sent = match self
            .publisher
            .send_batch(events)
            .instrument(span.clone())
            .await
        {
            Ok(sent) => sent,
            Err(error) => {
                spans.end(Some(&error));
                return Err(error);
            }
        };
        let label = self.settings.label;
        Ok(Box::pin(
            async move {
                // Each PubAck is bounded by its own timeout; this bounds the
                // batch as a whole.
                let confirmed = match tokio::time::timeout(STEP_TIMEOUT * 3, sent.confirmed()).await
                {
                    Ok(confirmed) => confirmed,
                    Err(_) => {
                        return Err(PublishError::Batch {
                            first: uuid::Uuid::nil(),
                            count: 0,
                            reason: format!("no PubAcks within {:?}", STEP_TIMEOUT * 3),
                        });
                    }
                };
                let (new, duplicates) = (confirmed.new, confirmed.duplicates);
                service_kit::meters::published(label, new, duplicates);
                let confirmed = confirmed.result();
                spans.end_with(&confirmed);
                confirmed?;
                tracing::debug!(new, duplicates, "CDC batch published");
                Ok(end_lsn)
            }
            .instrument(span),
        ))
    }
}

/// Hands one change of the open transaction to `capture`: a table's shape,
/// or an inserted row. Anything else — an UPDATE or DELETE of a published
/// table (the publications publish inserts only, but one an operator widened
/// sends them), a TRUNCATE, a type — is no event of the mapping and is
/// skipped. An error stops the reader.
pub(crate) fn change(capture: &mut impl Capture, data: &[u8]) -> anyhow::Result<()> {
    match pgoutput::decode(data)? {
        pgoutput::Message::Relation(relation) => capture.relation(&relation),
        pgoutput::Message::Insert {
            relation_id,
            values,
        } => capture.insert(relation_id, values),
        pgoutput::Message::Other(_) => Ok(()),
    }
}

/// The events of transactions that committed and are not sent yet, and the
/// end of the last of them (a transaction without events moves it too).
#[derive(Default)]
struct Gathered {
    events: Vec<super::Outgoing>,
    end_lsn: Option<Lsn>,
}

impl Gathered {
    fn add(&mut self, events: Vec<super::Outgoing>, end_lsn: Lsn) {
        self.events.extend(events);
        self.end_lsn = Some(end_lsn);
    }

    fn take(&mut self) -> Option<(Vec<super::Outgoing>, Lsn)> {
        let end_lsn = self.end_lsn.take()?;
        Some((std::mem::take(&mut self.events), end_lsn))
    }

    fn is_empty(&self) -> bool {
        self.end_lsn.is_none()
    }

    /// Whether another transaction may join: one atomic batch holds
    /// [`jetstream::MAX_ATOMIC_BATCH`] messages.
    fn has_room(&self) -> bool {
        self.events.len() < jetstream::MAX_ATOMIC_BATCH
    }
}

/// Waits (briefly) until the last confirmed position was reported to the
/// server, so that the next reader does not replay it, then ends the session.
async fn finish(client: &mut ReplicationClient, confirmed: Option<Lsn>) {
    if let Some(lsn) = confirmed {
        let reported = client.metrics();
        let deadline = tokio::time::Instant::now() + STATUS_INTERVAL * 10;
        while reported.last_applied_lsn() < lsn && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if let Err(error) = client.shutdown().await {
        tracing::debug!(%error, "closing the replication session");
    }
}

/// Heartbeats and slot status, until the slot turns out lost (the only way
/// this future completes).
async fn watch_slot(
    pool: PgPool,
    settings: CdcSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => std::future::pending::<()>().await,
            () = tokio::time::sleep(settings.heartbeat_interval) => {}
        }
        if let Err(error) = slot::heartbeat(&pool).await {
            tracing::debug!(%error, "heartbeat failed");
            continue;
        }
        match slot::status(&pool, &settings.slot).await {
            Ok(Some(status)) => {
                status.usable(&settings.slot)?;
                service_kit::meters::cdc_slot(
                    settings.label,
                    status.confirmed_lag_bytes.unwrap_or(0),
                    status.retained_bytes.unwrap_or(0),
                );
            }
            Ok(None) => {
                return Err(slot::resync_needed(
                    &settings.slot,
                    "vanished while order-service was streaming it",
                ));
            }
            Err(error) => tracing::debug!(%error, "reading the slot status failed"),
        }
    }
}

/// The replication connection, from `DATABASE_URL` as sqlx reads it: host
/// (a socket directory too, and `?host=`), port, user and database alike.
/// The password is not exposed by sqlx, so it comes from the URL (user info
/// or `?password=`) or, as for libpq, `PGPASSWORD` (not `~/.pgpass`). This build streams without TLS, so a URL that asks
/// for it is refused rather than silently downgraded.
fn replication_config(settings: &CdcSettings) -> anyhow::Result<ReplicationConfig> {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};

    let options: PgConnectOptions = settings
        .database_url
        .parse()
        .context("parsing DATABASE_URL")?;
    anyhow::ensure!(
        matches!(
            options.get_ssl_mode(),
            PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer
        ),
        "DATABASE_URL requires TLS (sslmode), and change data capture in this build streams \
         without it: build pgwire-replication with its tls feature, or connect without TLS"
    );
    let url = url::Url::parse(&settings.database_url).ok();
    let password = url
        .as_ref()
        .and_then(|url| {
            url.password()
                .map(|p| {
                    percent_encoding::percent_decode_str(p)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .or_else(|| {
                    url.query_pairs()
                        .find(|(name, _)| name == "password")
                        .map(|(_, value)| value.into_owned())
                })
        })
        .or_else(|| std::env::var("PGPASSWORD").ok())
        .unwrap_or_default();
    let user = options.get_username().to_owned();
    let database = options.get_database().unwrap_or(&user).to_owned();
    let host = match options.get_socket() {
        Some(dir) => dir.display().to_string(),
        None => options.get_host().to_owned(),
    };
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        database,
        settings.slot.clone(),
        settings.publication.clone(),
    )
    .with_port(options.get_port())
    // Timestamps in one unambiguous text form, whatever the server's defaults.
    .with_options("-c datestyle=ISO -c timezone=UTC")
    .with_status_interval(STATUS_INTERVAL)
    .with_wakeup_interval(Duration::from_secs(1))
    .with_application_name(format!("order-events-cdc-{}", settings.label)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(database_url: &str) -> CdcSettings {
        CdcSettings {
            database_url: database_url.to_owned(),
            slot: "s".into(),
            publication: "p".into(),
            heartbeat_interval: Duration::from_secs(1),
            max_in_flight: 1,
            crash_point: "none",
            label: "orders",
            names: Names::new("").unwrap(),
        }
    }

    #[test]
    fn the_replication_connection_is_read_from_database_url_as_sqlx_reads_it() {
        let tcp = replication_config(&settings(
            "postgres://ann:p%40ss@db.example:6543/orders?sslmode=disable",
        ))
        .unwrap();
        assert_eq!(
            (
                tcp.host.as_str(),
                tcp.port,
                tcp.user.as_str(),
                tcp.password.as_str(),
                tcp.database.as_str()
            ),
            ("db.example", 6543, "ann", "p@ss", "orders")
        );
        let socket = replication_config(&settings(
            "postgres://ann@localhost/orders?host=/var/run/postgresql",
        ))
        .unwrap();
        assert_eq!(socket.host, "/var/run/postgresql");
        let tls = replication_config(&settings(
            "postgres://ann@db.example/orders?sslmode=require",
        ));
        assert!(tls.is_err());
    }

    #[test]
    fn the_sqlstate_is_read_from_a_server_error() {
        let busy = PgWireError::Server(
            "ERROR: replication slot \"x\" is active for PID 42 (SQLSTATE 55006)".into(),
        );
        assert_eq!(sqlstate(&busy), Some("55006"));
        assert_eq!(sqlstate(&PgWireError::Server("no code".into())), None);
        assert_eq!(
            sqlstate(&PgWireError::Protocol("SQLSTATE 55006".into())),
            None
        );
    }
}
