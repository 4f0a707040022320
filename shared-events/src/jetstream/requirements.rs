//! What an existing stream must be for the patterns to keep every event.
//!
//! A stream made before the services start (by an operator, an older
//! release, infrastructure code) is taken as it is by `get_or_create`, so
//! its settings are checked here. The rules are the same for every mode and
//! for both services: rewards-service does not know the order mode, and a
//! stream fit for outbox today holds tomorrow's self-read orders after a
//! restart with another `ORDER_MODE`. In self-read the stream is the only
//! copy of an order; in the other modes the self-read projector's catch-up,
//! a switch back to self-read, `order-events cdc resync` and
//! `order-events dlq` read old events again. So nothing may delete an event:
//! no retention but limits, no age, no count or size limit.
//!
//! A limit with `discard: new` deletes nothing, but the stream never
//! shrinks, so once it is reached every publish is refused for good: an
//! outage on a date set by traffic. It is refused too.
//!
//! What can be put right without losing anything (a duplicate window
//! shorter than configured, rollups allowed) is corrected and logged; what
//! cannot (NATS cannot change retention or storage, and a limit may already
//! have deleted events) stops start-up with a [`Refusal`] naming the
//! setting, the value found, the value needed and what to do.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};

/// A setting that would lose events, and what the operator should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The setting's name in the stream's configuration.
    pub setting: &'static str,
    pub found: String,
    pub needed: String,
    /// What the setting does to the events.
    pub why: String,
    /// What the operator should do.
    pub remedy: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}, needs {}: {}; {}",
            self.setting, self.found, self.needed, self.why, self.remedy
        )
    }
}

/// A setting put right at start-up, which loses nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correction {
    /// A shorter window lets a retry after it store an event twice.
    RaiseDuplicateWindow { from: Duration, to: Duration },
    /// A rollup would let one message delete the stream's history; nothing
    /// in this workspace sends one.
    DisallowRollups,
}

/// What [`review`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Review {
    pub refusals: Vec<Refusal>,
    pub corrections: Vec<Correction>,
}

/// Compares the stream's `actual` configuration with the one the services
/// create (`wanted`: its subjects, storage and duplicate window).
pub fn review(actual: &Config, wanted: &Config) -> Review {
    let name = &actual.name;
    let mut refusals = Vec::new();
    let mut refuse = |setting, found: String, needed: String, why: String, remedy: String| {
        refusals.push(Refusal {
            setting,
            found,
            needed,
            why,
            remedy,
        });
    };

    if let Some(mirror) = &actual.mirror {
        refuse(
            "mirror",
            format!("a mirror of {}", mirror.name),
            "no mirror".into(),
            "a mirror takes no publishes".into(),
            format!("recreate {name} as a stream of its own"),
        );
    }
    if actual.subjects != wanted.subjects {
        refuse(
            "subjects",
            format!("{:?}", actual.subjects),
            format!("{:?}", wanted.subjects),
            "the services publish and consume on those subjects".into(),
            format!("update {name}'s subjects, or use another EVENTS_PREFIX"),
        );
    }
    if actual.storage != wanted.storage {
        refuse(
            "storage",
            storage(actual.storage).into(),
            storage(wanted.storage).into(),
            "a memory stream loses every event when its server restarts".into(),
            format!(
                "NATS cannot change a stream's storage: recreate {name} with file storage \
                 (copy out the events still needed first)"
            ),
        );
    }
    if actual.retention != RetentionPolicy::Limits {
        refuse(
            "retention",
            retention(actual.retention).into(),
            "limits".into(),
            "it deletes an event once consumers acknowledge it, and the self-read projector's \
             catch-up, a switch of modes, `order-events cdc resync` and `order-events dlq` \
             read events again"
                .into(),
            format!(
                "NATS cannot change a stream's retention: recreate {name} with limits retention \
                 (copy out the events still needed first)"
            ),
        );
    }
    if !actual.max_age.is_zero() {
        refuse(
            "max_age",
            humantime::format_duration(actual.max_age).to_string(),
            "0 (unlimited)".into(),
            "older events are deleted whether consumed or not (in self-read the stream is \
             the only copy of an order)"
                .into(),
            format!(
                "update {name} with max_age 0, then run `order-events audit`: events may \
                 already be gone"
            ),
        );
    }
    let discards_old = actual.discard == DiscardPolicy::Old;
    for (setting, limit, deletes) in [
        ("max_msgs", actual.max_messages, discards_old),
        ("max_bytes", actual.max_bytes, discards_old),
        // Per subject, `discard: new` refuses only with
        // `discard_new_per_subject`; without it old events are deleted.
        (
            "max_msgs_per_subject",
            actual.max_messages_per_subject,
            discards_old || !actual.discard_new_per_subject,
        ),
    ] {
        if limit > 0 {
            let (discard, why) = if deletes {
                (
                    "old",
                    "once reached, the oldest events are deleted whether consumed or not",
                )
            } else {
                (
                    "new",
                    "once reached, every publish is refused for good, since nothing is ever \
                     deleted from the stream",
                )
            };
            refuse(
                setting,
                format!("{limit} with discard {discard}"),
                "-1 (unlimited)".into(),
                why.into(),
                format!(
                    "update {name} with {setting} -1, then run `order-events audit`: events \
                     may already be gone"
                ),
            );
        }
    }
    if actual.sealed {
        refuse(
            "sealed",
            "true".into(),
            "false".into(),
            "a sealed stream refuses every publish, and NATS cannot unseal it".into(),
            format!("recreate {name} (copy out its events first)"),
        );
    }
    if actual.no_ack {
        refuse(
            "no_ack",
            "true".into(),
            "false".into(),
            "publishes get no PubAck, so a stored event counts as failed (self-read would \
             answer 503 for an order it stored)"
                .into(),
            format!(
                "update {name} with no_ack false, then run `order-events audit` for orders \
                 stored though refused"
            ),
        );
    }
    if let Some(transform) = &actual.subject_transform {
        refuse(
            "subject_transform",
            format!("{} -> {}", transform.source, transform.destination),
            "none".into(),
            "events are stored under other subjects than they were published to, which \
             the consumers' filters and the per-order sequence checks do not expect"
                .into(),
            format!("remove the subject transform from {name}"),
        );
    }

    let mut corrections = Vec::new();
    if actual.duplicate_window < wanted.duplicate_window {
        corrections.push(Correction::RaiseDuplicateWindow {
            from: actual.duplicate_window,
            to: wanted.duplicate_window,
        });
    }
    if actual.allow_rollup {
        corrections.push(Correction::DisallowRollups);
    }
    Review {
        refusals,
        corrections,
    }
}

fn storage(storage: StorageType) -> &'static str {
    match storage {
        StorageType::File => "file",
        StorageType::Memory => "memory",
    }
}

fn retention(retention: RetentionPolicy) -> &'static str {
    match retention {
        RetentionPolicy::Limits => "limits",
        RetentionPolicy::Interest => "interest",
        RetentionPolicy::WorkQueue => "workqueue",
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::stream::{Source, SubjectTransform};

    use super::*;

    /// What the services create: the reference every case departs from.
    fn wanted() -> Config {
        Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        }
    }

    /// How a server reports [`wanted`] back: unlimited is -1.
    fn as_created() -> Config {
        Config {
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            ..wanted()
        }
    }

    fn refused(actual: Config) -> Vec<(&'static str, String)> {
        review(&actual, &wanted())
            .refusals
            .into_iter()
            .map(|refusal| (refusal.setting, refusal.found))
            .collect()
    }

    #[test]
    fn the_stream_the_services_create_passes_as_the_server_reports_it_and_as_sent() {
        assert_eq!(review(&as_created(), &wanted()), Review::default());
        assert_eq!(review(&wanted(), &wanted()), Review::default());
    }

    #[test]
    fn each_setting_that_loses_or_refuses_events_is_refused_by_name() {
        let hour = Duration::from_secs(3600);
        let cases: Vec<(Config, &str, &str)> = vec![
            (
                Config {
                    retention: RetentionPolicy::Interest,
                    ..as_created()
                },
                "retention",
                "interest",
            ),
            (
                Config {
                    retention: RetentionPolicy::WorkQueue,
                    ..as_created()
                },
                "retention",
                "workqueue",
            ),
            (
                Config {
                    max_age: hour,
                    ..as_created()
                },
                "max_age",
                "1h",
            ),
            // max_age deletes by age whatever the discard policy.
            (
                Config {
                    max_age: hour,
                    discard: DiscardPolicy::New,
                    ..as_created()
                },
                "max_age",
                "1h",
            ),
            (
                Config {
                    max_messages: 1000,
                    ..as_created()
                },
                "max_msgs",
                "1000 with discard old",
            ),
            (
                Config {
                    max_messages: 1000,
                    discard: DiscardPolicy::New,
                    ..as_created()
                },
                "max_msgs",
                "1000 with discard new",
            ),
            (
                Config {
                    max_bytes: 1 << 30,
                    ..as_created()
                },
                "max_bytes",
                "1073741824 with discard old",
            ),
            (
                Config {
                    max_bytes: 1 << 30,
                    discard: DiscardPolicy::New,
                    ..as_created()
                },
                "max_bytes",
                "1073741824 with discard new",
            ),
            (
                Config {
                    max_messages_per_subject: 1,
                    ..as_created()
                },
                "max_msgs_per_subject",
                "1 with discard old",
            ),
            // Without `discard_new_per_subject` a per-subject limit still
            // deletes the subject's oldest event.
            (
                Config {
                    max_messages_per_subject: 1,
                    discard: DiscardPolicy::New,
                    ..as_created()
                },
                "max_msgs_per_subject",
                "1 with discard old",
            ),
            (
                Config {
                    max_messages_per_subject: 1,
                    discard: DiscardPolicy::New,
                    discard_new_per_subject: true,
                    ..as_created()
                },
                "max_msgs_per_subject",
                "1 with discard new",
            ),
            (
                Config {
                    storage: StorageType::Memory,
                    ..as_created()
                },
                "storage",
                "memory",
            ),
            (
                Config {
                    subjects: vec!["order.>".into()],
                    ..as_created()
                },
                "subjects",
                "[\"order.>\"]",
            ),
            (
                Config {
                    sealed: true,
                    ..as_created()
                },
                "sealed",
                "true",
            ),
            (
                Config {
                    no_ack: true,
                    ..as_created()
                },
                "no_ack",
                "true",
            ),
            (
                Config {
                    subject_transform: Some(SubjectTransform {
                        source: "orders.>".into(),
                        destination: "moved.>".into(),
                    }),
                    ..as_created()
                },
                "subject_transform",
                "orders.> -> moved.>",
            ),
        ];
        for (actual, setting, found) in cases {
            assert_eq!(
                refused(actual),
                vec![(setting, found.to_owned())],
                "{setting} {found}"
            );
        }
    }

    #[test]
    fn a_mirror_is_refused_by_name_beside_its_missing_subjects() {
        let mirror = Config {
            subjects: Vec::new(),
            mirror: Some(Source {
                name: "ELSEWHERE".into(),
                ..Default::default()
            }),
            ..as_created()
        };
        assert_eq!(
            refused(mirror),
            vec![
                ("mirror", "a mirror of ELSEWHERE".to_owned()),
                ("subjects", "[]".to_owned()),
            ]
        );
    }

    #[test]
    fn a_refusal_names_the_setting_the_value_found_and_needed_and_what_to_do() {
        let refusal = review(
            &Config {
                max_age: Duration::from_secs(3600),
                ..as_created()
            },
            &wanted(),
        )
        .refusals
        .remove(0);
        let message = refusal.to_string();
        assert!(
            message.starts_with("max_age is 1h, needs 0 (unlimited): older events are deleted"),
            "{message}"
        );
        assert!(
            message.contains("update ORDERS with max_age 0, then run `order-events audit`"),
            "{message}"
        );
    }

    #[test]
    fn a_shorter_duplicate_window_is_raised_and_a_longer_one_kept() {
        let shorter = Config {
            duplicate_window: Duration::from_secs(10),
            ..as_created()
        };
        assert_eq!(
            review(&shorter, &wanted()),
            Review {
                refusals: Vec::new(),
                corrections: vec![Correction::RaiseDuplicateWindow {
                    from: Duration::from_secs(10),
                    to: Duration::from_secs(120),
                }],
            }
        );
        let longer = Config {
            duplicate_window: Duration::from_secs(600),
            ..as_created()
        };
        assert_eq!(review(&longer, &wanted()), Review::default());
    }

    #[test]
    fn allowed_rollups_are_switched_off() {
        let rollups = Config {
            allow_rollup: true,
            ..as_created()
        };
        assert_eq!(
            review(&rollups, &wanted()).corrections,
            vec![Correction::DisallowRollups]
        );
    }

    #[test]
    fn the_deletions_that_protect_history_are_left_alone() {
        // deny_delete and deny_purge only forbid operators to delete; they
        // keep events, so they are not this check's business.
        let protected = Config {
            deny_delete: true,
            deny_purge: true,
            ..as_created()
        };
        assert_eq!(review(&protected, &wanted()), Review::default());
    }
}
