//! What a subject per order costs the order stream (so that every event
//! of an order carries its position, and the broker refuses one stored out
//! of place), against the single subject of today and a bounded number of
//! partitions.
//!
//! Each run starts a private nats-server with the benchmark's durability
//! (file storage, `sync_interval: always`), creates the order stream with
//! the services' own [`ensure_streams`](shared_events::jetstream::ensure_streams)
//! and default [`StreamSettings`](shared_events::StreamSettings), and:
//! 1. **Places** `orders` orders, one `OrderPlaced` envelope each, under
//!    one [`Layout`], through the services' own publisher as the outbox
//!    relay sends ([`load`]): the publish rate, first send to last PubAck.
//! 2. **Probes** the server ([`probe`]): its resident memory (`VmRSS`) and
//!    peak (`VmHWM`), the stream's messages, subjects and bytes, and the
//!    store's size on disk.
//! 3. **Restarts** it twice ([`restart`]): stopped politely, then killed;
//!    each time, how long until the stream answers with every message, and
//!    the memory then.
//! 4. With a subject per order only, **cancels** orders ([`cancel`]) each
//!    way of telling the broker the cancellation's place, and puts the
//!    broker to the cases of events out of place ([`checks`], over
//!    [`wire`]'s publishes).
//!
//! The layouts are interleaved as the benchmark's modes are: round `r` runs
//! every layout once on fresh servers, forward in odd rounds, backward in
//! even ones, and a ratio is taken within a round (a layout's rate over
//! the single subject's of the same round) before the median of the
//! rounds. [`report`] renders the results as Markdown.

mod cancel;
mod checks;
mod layout;
mod load;
mod probe;
mod report;
mod restart;
mod wire;

use std::collections::HashSet;

use anyhow::Context as _;
use harness::servers::Nats;
use serde::Serialize;
use shared_events::jetstream::{self, MAX_ATOMIC_BATCH, Publisher};
use shared_events::{Names, StreamSettings};
use uuid::Uuid;

pub use self::cancel::{Expectation, Transport, Way};
pub use self::checks::{Case, Check};
pub use self::layout::{Layout, Subjects, partition};
pub use self::probe::{Memory, StreamState};
pub use self::report::INTERPRETATION;
pub use self::restart::Restart;
pub use self::wire::Answer;
use super::figures::{median, min_max};
use super::{cores, progress};
use restart::Stop;

/// What to measure.
#[derive(Debug, Clone)]
pub struct SubjectsConfig {
    /// The layouts, the one the others are measured against first.
    pub layouts: Vec<Layout>,
    /// Orders placed per run, one `OrderPlaced` each.
    pub orders: usize,
    /// Partitions of [`Layout::Partitions`].
    pub partitions: u32,
    /// Events per batch, as the outbox relay's `RELAY_BATCH_SIZE`.
    pub batch: usize,
    /// Orders cancelled each [`Way`] per run of [`Layout::PerOrder`] (at
    /// most a sixth of `orders`, so that every way has orders of its own).
    pub cancellations: usize,
    /// Runs of each layout, each on a fresh server.
    pub runs: usize,
}

/// One run of one layout, on a server of its own.
#[derive(Debug, Clone, Serialize)]
pub struct LayoutRun {
    pub layout: Layout,
    /// The round it ran in, from 1.
    pub round: usize,
    pub server_version: String,
    /// Whether the events went in atomic batches (the stream takes them).
    pub atomic_batches: bool,
    /// Events stored and acknowledged per second.
    pub per_sec: f64,
    /// `per_sec` over the single subject's in the same round.
    pub ratio_to_one_subject: Option<f64>,
    /// Mean payload of an `OrderPlaced`, bytes.
    pub payload_bytes: f64,
    /// The server's memory right after the load.
    pub after_load: Memory,
    pub state: StreamState,
    /// Distinct subjects the events were published to, as the tool counts
    /// them from the orders it placed.
    pub distinct_subjects: u64,
    /// The store's size on disk after the load, bytes.
    pub store_bytes: u64,
    pub restart: Restart,
    pub restart_after_kill: Restart,
    /// Per way, with a subject per order only.
    pub cancellations: Vec<CancellationRun>,
    /// With a subject per order only.
    pub checks: Vec<Check>,
}

/// One way of cancelling in one run.
#[derive(Debug, Clone, Serialize)]
pub struct CancellationRun {
    pub way: Way,
    pub orders: usize,
    pub per_sec: f64,
    /// `per_sec` over that of the way without expectation sent alike.
    pub ratio_to_unchecked: f64,
}

/// A figure over the runs: the median and the smallest and largest.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min_max: [f64; 2],
}

impl Spread {
    fn of(values: Vec<f64>) -> Self {
        Self {
            median: median(values.clone()),
            min_max: min_max(values),
        }
    }
}

/// One layout over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct LayoutResult {
    pub layout: Layout,
    /// Its subjects, e.g. `orders.<order_id>.placed`.
    pub subjects: String,
    pub per_sec: Spread,
    pub ratio_to_one_subject: Option<Spread>,
    pub rss_mib: Spread,
    pub hwm_mib: Spread,
    pub messages: Spread,
    pub num_subjects: Spread,
    pub stream_mib: Spread,
    pub store_mib: Spread,
    pub restart_secs: Spread,
    pub restart_rss_mib: Spread,
    pub restart_after_kill_secs: Spread,
    pub restart_after_kill_rss_mib: Spread,
}

/// One way of cancelling over the runs.
#[derive(Debug, Clone, Serialize)]
pub struct CancellationResult {
    pub way: Way,
    pub orders: usize,
    pub per_sec: Spread,
    pub ratio_to_unchecked: Spread,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubjectsReport {
    pub orders: usize,
    pub partitions: u32,
    pub batch: usize,
    pub runs_per_layout: usize,
    pub cores: usize,
    pub server_version: String,
    pub atomic_batches: bool,
    /// `/proc/loadavg`'s 1, 5 and 15 minutes averages before and after.
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    /// Per layout, in the order given.
    pub results: Vec<LayoutResult>,
    pub cancellations: Vec<CancellationResult>,
    /// The first run's (every run puts the broker to the same cases).
    pub checks: Vec<Check>,
    /// Every run, in the order they ran.
    pub runs: Vec<LayoutRun>,
}

/// Runs every layout `config.runs` times, interleaved (see the module's
/// comment), reporting progress on stderr.
pub async fn run(config: &SubjectsConfig) -> anyhow::Result<SubjectsReport> {
    anyhow::ensure!(config.runs > 0, "the comparison needs at least one run");
    anyhow::ensure!(config.orders > 0, "the comparison needs orders to place");
    anyhow::ensure!(!config.layouts.is_empty(), "no layout to measure");
    anyhow::ensure!(
        (1..=MAX_ATOMIC_BATCH).contains(&config.batch),
        "a batch holds 1 to {MAX_ATOMIC_BATCH} events"
    );
    let load_before = load_average();
    let mut runs: Vec<LayoutRun> = Vec::new();
    for round in 1..=config.runs {
        for layout in in_round(&config.layouts, round) {
            let label = format!("subjects {} run {round}/{}", layout.name(), config.runs);
            let run = run_layout(layout, round, config, &label)
                .await
                .with_context(|| format!("measuring {label}"))?;
            progress(
                &label,
                &format!(
                    "{:.0} events/s, {:.0} MiB resident, {} subjects",
                    run.per_sec, run.after_load.rss_mib, run.state.num_subjects
                ),
            );
            runs.push(run);
        }
    }
    compare_with_one_subject(&mut runs);
    let first = &runs[0];
    Ok(SubjectsReport {
        orders: config.orders,
        partitions: config.partitions,
        batch: config.batch,
        runs_per_layout: config.runs,
        cores: cores(),
        server_version: first.server_version.clone(),
        atomic_batches: first.atomic_batches,
        load_before,
        load_after: load_average(),
        results: summarize(&config.layouts, config.partitions, &runs),
        cancellations: summarize_cancellations(&runs),
        checks: runs
            .iter()
            .find(|r| !r.checks.is_empty())
            .map(|r| r.checks.clone())
            .unwrap_or_default(),
        runs,
    })
}

/// One run of `layout` on a fresh server; `label` names it in the progress.
async fn run_layout(
    layout: Layout,
    round: usize,
    config: &SubjectsConfig,
    label: &str,
) -> anyhow::Result<LayoutRun> {
    let mut nats = tokio::task::block_in_place(Nats::start)?;
    let names = Names::new("")?;
    let subjects = Subjects::new(&names, config.partitions);
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    let features = jetstream::ensure_streams(&js, &names, &StreamSettings::default()).await?;
    let publisher = Publisher::new(client.clone(), features.atomic_batches);

    progress(
        label,
        &format!(
            "placing {} orders on {}",
            config.orders,
            subjects.pattern(layout)
        ),
    );
    let placed = load::place(
        &publisher,
        &subjects,
        layout,
        config.orders,
        config.batch,
        label,
    )
    .await?;
    let pid = nats.pid().context("nats-server is not running")?;
    let after_load = probe::memory(pid)?;
    let state = probe::stream_state(&js, names.stream()).await?;
    let store_bytes = probe::disk_bytes(&nats.store_dir())?;
    let distinct_subjects = placed
        .order_ids
        .iter()
        .map(|id| subjects.placed(layout, *id))
        .collect::<HashSet<_>>()
        .len() as u64;
    let server_version = client.server_info().version;
    drop((publisher, js, client));

    progress(label, "restarting nats-server (stopped, then killed)");
    let restart = restart::restart(&mut nats, names.stream(), state.messages, Stop::Polite).await?;
    let restart_after_kill =
        restart::restart(&mut nats, names.stream(), state.messages, Stop::Kill).await?;

    let (cancellations, checks) = if layout == Layout::PerOrder {
        let client = async_nats::connect(nats.url()).await?;
        let orders: Vec<(Uuid, u64)> = placed
            .order_ids
            .iter()
            .copied()
            .zip(placed.sequences.iter().copied())
            .collect();
        let cancellations =
            cancel_each_way(&client, &subjects, &orders, round, config, label).await?;
        progress(label, "events out of place");
        let checks = checks::run(&client, &subjects).await?;
        (cancellations, checks)
    } else {
        (Vec::new(), Vec::new())
    };

    Ok(LayoutRun {
        layout,
        round,
        server_version,
        atomic_batches: features.atomic_batches,
        per_sec: placed.per_sec,
        ratio_to_one_subject: None,
        payload_bytes: placed.payload_bytes,
        after_load,
        state,
        distinct_subjects,
        store_bytes,
        restart,
        restart_after_kill,
        cancellations,
        checks,
    })
}

/// Cancels `config.cancellations` of `orders` each [`Way`] (in the
/// round's order, each way on orders of its own), and rates each way
/// against the way without expectation sent alike.
async fn cancel_each_way(
    client: &async_nats::Client,
    subjects: &Subjects,
    orders: &[(Uuid, u64)],
    round: usize,
    config: &SubjectsConfig,
    label: &str,
) -> anyhow::Result<Vec<CancellationRun>> {
    let each = config.cancellations.min(orders.len() / Way::ALL.len());
    let mut rates = Vec::new();
    for way in in_round(&Way::ALL, round) {
        let index = Way::ALL
            .iter()
            .position(|w| *w == way)
            .expect("a way of all");
        let mine = &orders[index * each..(index + 1) * each];
        let way_label = format!(
            "{label}: cancelled, {:?} {:?}",
            way.expectation, way.transport
        );
        progress(label, &format!("cancelling {each} orders: {way_label}"));
        let per_sec = cancel::cancel(client, subjects, way, mine, config.batch, &way_label).await?;
        rates.push((way, per_sec));
    }
    let unchecked = |transport: Transport| {
        rates
            .iter()
            .find(|(w, _)| w.expectation == Expectation::None && w.transport == transport)
            .map_or(f64::NAN, |(_, rate)| *rate)
    };
    Ok(Way::ALL
        .iter()
        .filter_map(|way| rates.iter().find(|(w, _)| w == way))
        .map(|(way, per_sec)| CancellationRun {
            way: *way,
            orders: each,
            per_sec: *per_sec,
            ratio_to_unchecked: per_sec / unchecked(way.transport),
        })
        .collect())
}

/// `items` in the order round `round` (from 1) runs them: as given in odd
/// rounds, reversed in even ones.
fn in_round<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let mut order = items.to_vec();
    if round.is_multiple_of(2) {
        order.reverse();
    }
    order
}

/// Sets each run's rate against the single subject's of its round, when
/// the single subject ran.
fn compare_with_one_subject(runs: &mut [LayoutRun]) {
    let rounds = runs.iter().map(|r| r.round).max().unwrap_or(0);
    for round in 1..=rounds {
        let control = runs
            .iter()
            .find(|r| r.round == round && r.layout == Layout::OneSubject)
            .map(|r| r.per_sec);
        if let Some(control) = control {
            for run in runs.iter_mut().filter(|r| r.round == round) {
                run.ratio_to_one_subject = Some(run.per_sec / control);
            }
        }
    }
}

/// Each of `layouts` over its runs.
fn summarize(layouts: &[Layout], partitions: u32, runs: &[LayoutRun]) -> Vec<LayoutResult> {
    const MIB: f64 = 1024.0 * 1024.0;
    let subjects = Subjects::new(&Names::new("").expect("the plain names"), partitions);
    layouts
        .iter()
        .map(|layout| {
            let of_layout: Vec<&LayoutRun> = runs.iter().filter(|r| r.layout == *layout).collect();
            let spread = |figure: &dyn Fn(&LayoutRun) -> f64| {
                Spread::of(of_layout.iter().map(|r| figure(r)).collect())
            };
            let ratios: Vec<f64> = of_layout
                .iter()
                .filter_map(|r| r.ratio_to_one_subject)
                .collect();
            LayoutResult {
                layout: *layout,
                subjects: subjects.pattern(*layout),
                per_sec: spread(&|r| r.per_sec),
                ratio_to_one_subject: (!ratios.is_empty()).then(|| Spread::of(ratios)),
                rss_mib: spread(&|r| r.after_load.rss_mib),
                hwm_mib: spread(&|r| r.after_load.hwm_mib),
                messages: spread(&|r| r.state.messages as f64),
                num_subjects: spread(&|r| r.state.num_subjects as f64),
                stream_mib: spread(&|r| r.state.bytes as f64 / MIB),
                store_mib: spread(&|r| r.store_bytes as f64 / MIB),
                restart_secs: spread(&|r| r.restart.secs),
                restart_rss_mib: spread(&|r| r.restart.memory.rss_mib),
                restart_after_kill_secs: spread(&|r| r.restart_after_kill.secs),
                restart_after_kill_rss_mib: spread(&|r| r.restart_after_kill.memory.rss_mib),
            }
        })
        .collect()
}

/// Each way of cancelling over the runs that cancelled.
fn summarize_cancellations(runs: &[LayoutRun]) -> Vec<CancellationResult> {
    Way::ALL
        .iter()
        .filter_map(|way| {
            let of_way: Vec<&CancellationRun> = runs
                .iter()
                .flat_map(|r| &r.cancellations)
                .filter(|c| c.way == *way)
                .collect();
            let first = of_way.first()?;
            Some(CancellationResult {
                way: *way,
                orders: first.orders,
                per_sec: Spread::of(of_way.iter().map(|c| c.per_sec).collect()),
                ratio_to_unchecked: Spread::of(
                    of_way.iter().map(|c| c.ratio_to_unchecked).collect(),
                ),
            })
        })
        .collect()
}

/// The 1, 5 and 15 minutes load averages (zeros where unknown).
fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut values = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [(); 3].map(|()| values.next().unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(layout: Layout, round: usize, per_sec: f64) -> LayoutRun {
        LayoutRun {
            layout,
            round,
            server_version: String::new(),
            atomic_batches: true,
            per_sec,
            ratio_to_one_subject: None,
            payload_bytes: 0.0,
            after_load: Memory::default(),
            state: StreamState::default(),
            distinct_subjects: 0,
            store_bytes: 0,
            restart: Restart::default(),
            restart_after_kill: Restart::default(),
            cancellations: Vec::new(),
            checks: Vec::new(),
        }
    }

    #[test]
    fn rounds_run_the_layouts_forward_then_backward() {
        let layouts = Layout::ALL;
        assert_eq!(in_round(&layouts, 1), layouts);
        assert_eq!(
            in_round(&layouts, 2),
            [Layout::Partitions, Layout::PerOrder, Layout::OneSubject]
        );
    }

    #[test]
    fn a_layout_is_rated_against_the_single_subject_of_its_round() {
        let mut runs = vec![
            run(Layout::OneSubject, 1, 100.0),
            run(Layout::PerOrder, 1, 50.0),
            run(Layout::PerOrder, 2, 90.0),
            run(Layout::OneSubject, 2, 300.0),
            run(Layout::OneSubject, 3, 200.0),
            run(Layout::PerOrder, 3, 200.0),
        ];
        compare_with_one_subject(&mut runs);
        let results = summarize(&[Layout::OneSubject, Layout::PerOrder], 256, &runs);
        let per_order = &results[1];
        assert_eq!(per_order.subjects, "orders.<order_id>.placed");
        assert_eq!(per_order.per_sec.median, 90.0);
        // 50/100, 90/300, 200/200: not 90/200.
        let ratio = per_order.ratio_to_one_subject.unwrap();
        assert_eq!(ratio.median, 0.5);
        assert_eq!(ratio.min_max, [0.3, 1.0]);
        assert_eq!(results[0].ratio_to_one_subject.unwrap().median, 1.0);
    }

    #[test]
    fn the_load_average_has_three_figures() {
        assert!(load_average().iter().all(|v| *v >= 0.0));
    }
}
