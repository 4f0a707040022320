//! NATS names. Everything hangs off one prefix so that two deployments, or two
//! tests, can share a NATS server without seeing each other's messages.

/// Stream, subject and consumer names for one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    stream: String,
    subject_root: String,
    dead_letter_stream: String,
    dead_letter_root: String,
}

/// The prefix contained something other than ASCII letters, digits, `_` or `-`.
#[derive(Debug, thiserror::Error)]
#[error("events prefix {0:?} may only contain ASCII letters, digits, '_' and '-'")]
pub struct InvalidPrefix(String);

impl Names {
    /// Names under `prefix`; the empty prefix gives the plain names of the design
    /// (stream `ORDERS`, subjects `orders.>`).
    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(InvalidPrefix(prefix.to_owned()));
        }
        let (stream_prefix, subject_prefix) = if prefix.is_empty() {
            (String::new(), String::new())
        } else {
            (
                format!("{}_", prefix.to_ascii_uppercase()),
                format!("{prefix}."),
            )
        };
        Ok(Self {
            stream: format!("{stream_prefix}ORDERS"),
            subject_root: format!("{subject_prefix}orders"),
            dead_letter_stream: format!("{stream_prefix}ORDERS_DLQ"),
            dead_letter_root: format!("{subject_prefix}dead-letter.orders"),
        })
    }

    /// The stream that holds every order event.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The wildcard subject the stream captures.
    pub fn stream_subjects(&self) -> String {
        format!("{}.>", self.subject_root)
    }

    /// Where `OrderPlaced` is published.
    pub fn order_placed_subject(&self) -> String {
        format!("{}.placed", self.subject_root)
    }

    /// Where `OrderCancelled` is published. The consumers take every
    /// subject of the stream ([`Names::stream_subjects`]), so they read an
    /// order's events wherever under it they are published.
    pub fn order_cancelled_subject(&self) -> String {
        format!("{}.cancelled", self.subject_root)
    }

    /// The stream that keeps messages a consumer could not process.
    pub fn dead_letter_stream(&self) -> &str {
        &self.dead_letter_stream
    }

    /// Dead letters from `consumer` go to this subject.
    pub fn dead_letter_subject(&self, consumer: &str) -> String {
        format!("{}.{consumer}", self.dead_letter_root)
    }

    /// Subjects of the dead-letter stream (disjoint from the main stream's, as
    /// JetStream requires).
    pub fn dead_letter_subjects(&self) -> String {
        format!("{}.>", self.dead_letter_root)
    }

    /// Durable name of rewards-service's consumer.
    pub fn rewards_consumer(&self) -> &'static str {
        "rewards"
    }

    /// Durable name of order-service's self-read projector, which writes the
    /// order history from the stream (known to every mode: leaving
    /// self-read removes it once it has applied everything).
    pub fn projector_consumer(&self) -> &'static str {
        Self::PROJECTOR_CONSUMER
    }

    /// [`Names::projector_consumer`], for who has no names at hand.
    pub const PROJECTOR_CONSUMER: &'static str = "order-history";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_prefix_gives_the_plain_names() {
        let names = Names::new("").unwrap();
        assert_eq!(names.stream(), "ORDERS");
        assert_eq!(names.order_placed_subject(), "orders.placed");
        assert_eq!(names.order_cancelled_subject(), "orders.cancelled");
        assert_eq!(names.stream_subjects(), "orders.>");
    }

    #[test]
    fn a_prefix_isolates_stream_and_subjects() {
        let names = Names::new("t42").unwrap();
        assert_eq!(names.stream(), "T42_ORDERS");
        assert_eq!(names.order_placed_subject(), "t42.orders.placed");
        assert_eq!(names.order_cancelled_subject(), "t42.orders.cancelled");
        assert_eq!(names.dead_letter_stream(), "T42_ORDERS_DLQ");
        assert_eq!(
            names.dead_letter_subject("rewards"),
            "t42.dead-letter.orders.rewards"
        );
    }

    #[test]
    fn a_prefix_with_subject_tokens_is_rejected() {
        assert!(Names::new("a.b").is_err());
        assert!(Names::new("a>").is_err());
        assert!(Names::new("a b").is_err());
    }
}
