//! The comparison as Markdown: the layouts, the ways of cancelling, and the
//! broker's answers to events out of place.

use std::fmt::Write as _;

use super::super::report::{Format, thousands};
use super::{Spread, SubjectsReport};

/// The heading from which `subjects.md` is written by hand: a new run
/// rewrites what comes before it and keeps it.
pub const INTERPRETATION: &str = "## Interpretation";

impl SubjectsReport {
    /// The results as Markdown, `command` being what made them.
    pub fn markdown(&self, command: &str) -> String {
        let f = Format {
            spread: self.runs_per_layout > 1,
        };
        let figure = |s: &Spread, decimals| f.figure(s.median, s.min_max, decimals);
        let load = |l: [f64; 3]| format!("{:.1}, {:.1}, {:.1}", l[0], l[1], l[2]);
        let payload = self.runs.first().map_or(0.0, |r| r.payload_bytes).round();
        let sent = if self.atomic_batches {
            format!("in atomic batches of {}", self.batch)
        } else {
            format!(
                "pipelined, {} at a time (this server takes no atomic batches)",
                self.batch
            )
        };
        let runs = if self.runs_per_layout == 1 {
            "1 run of each layout".to_owned()
        } else {
            format!(
                "{} runs of each layout, interleaved (every layout once per round, forward, then \
                 backward); each figure is the median of the runs with their min–max in brackets, \
                 a ratio taken within its round",
                self.runs_per_layout
            )
        };
        let mut out = String::from("# A subject per order: what it costs the order stream\n\n");
        let _ = writeln!(
            out,
            "```text\n{command}\n```\n\n\
             nats-server {}, on a machine of {} cores shared with other work (load average {} \
             before, {} after). Every run on a fresh server: file storage, every write flushed \
             before its PubAck (`sync_interval: always`), the order stream created by the \
             services' own `ensure_streams` with their default settings (duplicate window \
             2 min). {} orders per run, one `OrderPlaced` envelope each ({payload:.0} bytes), sent \
             through the services' publisher as the outbox relay sends them: {sent}, one batch \
             awaited at a time. {runs}.\n",
            self.server_version,
            self.cores,
            load(self.load_before),
            load(self.load_after),
            thousands(self.orders as f64, 0),
        );
        let _ = writeln!(
            out,
            "Memory is nats-server's resident set right after the load (`VmRSS`) and its peak \
             (`VmHWM`); both include the duplicate window's message ids, alike in every layout. \
             A restart runs from the stop to the first `STREAM.INFO` that reports every \
             message: stopped with SIGTERM (the server writes its stream state on the way out), \
             then killed with SIGKILL (it rebuilds that state from the message blocks).\n"
        );
        out.push_str(
            "| layout | subjects | events/s | × one subject | RSS MiB | VmHWM MiB | messages | \
             num_subjects | stream MiB | store on disk MiB | restart s | RSS after restart MiB | \
             restart after kill s | RSS after kill MiB |\n",
        );
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.results {
            let ratio = r
                .ratio_to_one_subject
                .as_ref()
                .map_or_else(|| "–".to_owned(), |s| figure(s, 2));
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {ratio} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.layout.name(),
                r.subjects,
                figure(&r.per_sec, 0),
                figure(&r.rss_mib, 0),
                figure(&r.hwm_mib, 0),
                thousands(r.messages.median, 0),
                figure(&r.num_subjects, 0),
                figure(&r.stream_mib, 0),
                figure(&r.store_mib, 0),
                figure(&r.restart_secs, 2),
                figure(&r.restart_rss_mib, 0),
                figure(&r.restart_after_kill_secs, 2),
                figure(&r.restart_after_kill_rss_mib, 0),
            );
        }
        if let Some(first) = self.cancellations.first() {
            let _ = writeln!(
                out,
                "\n## Cancelling with a subject per order\n\n\
                 On the subject-per-order stream after its restarts, {} orders cancelled each way \
                 per run, every way on orders of its own, so that each cancellation is its \
                 order's second event and its expectation holds (all were stored). The ratio is \
                 to the cancellations without expectation sent the same way in the same run.\n",
                thousands(first.orders as f64, 0)
            );
            out.push_str("| expectation | sent | cancellations/s | × no expectation |\n");
            out.push_str("|---|---|---:|---:|\n");
            for c in &self.cancellations {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    c.way.expectation_label(),
                    c.way.transport_label(self.batch),
                    figure(&c.per_sec, 0),
                    figure(&c.ratio_to_unchecked, 2),
                );
            }
        }
        if !self.checks.is_empty() {
            out.push_str(
                "\n## Events out of place\n\n\
                 What the broker answered on the subject-per-order stream (first run), in this \
                 order, each case on orders of its own; JetStream's error codes as it gave them.\n\n",
            );
            out.push_str("| case | answer |\n|---|---|\n");
            for check in &self.checks {
                let _ = writeln!(out, "| {} | {} |", check.case.label(), check.answer.label());
            }
        }
        out
    }
}
