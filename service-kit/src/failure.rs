//! Telling a message that can never be applied from a database that cannot
//! apply anything just now. A consumer that retries the first kind forever
//! stalls every message batched with it; one that counts the second kind
//! against the message dead-letters healthy events during every database
//! restart, lock queue or burst of contention.

/// What a failure to apply an event says about retrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The same input fails the same way every time: a value PostgreSQL
    /// cannot store (SQLSTATE class 22: an overflow, a bad encoding) or a
    /// constraint it breaks (class 23). Isolated and dead-lettered at once.
    Poison,
    /// The database, not the message, failed: it is unreachable or refusing
    /// work (lost connections, pool time-outs, SQLSTATE classes 08 and 53,
    /// 57P01–57P05, 25006: a read-only standby while a failover completes),
    /// or it gave up on work that a later attempt finishes (a serialization
    /// failure 40001, a deadlock 40P01, a lock not available 55P03, a
    /// statement, transaction or idle timeout 57014, 25P03, 25P04). Retried
    /// with backoff for as long as it lasts and never counted toward
    /// dead-lettering.
    Transient,
    /// Anything else: retried with backoff, dead-lettered after the
    /// consumer's maximum deliveries.
    Retry,
}

/// An event the service refuses by its own rules, against what its
/// database holds (say, a cancellation whose customer is not the one its
/// order was credited to): the same every time, so [`Failure::Poison`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Classifies `error`: a [`Refused`] in its chain is poison; otherwise the
/// first database error in its chain decides. `idempotency_keys` names the
/// unique constraints that make applying an event idempotent: hitting one
/// means a concurrent apply won a race, and a retry finds the event applied.
pub fn classify(error: &anyhow::Error, idempotency_keys: &[&str]) -> Failure {
    if error.chain().any(|e| e.is::<Refused>()) {
        return Failure::Poison;
    }
    let Some(error) = error.chain().find_map(|e| e.downcast_ref::<sqlx::Error>()) else {
        return Failure::Retry;
    };
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            let constraint = db.constraint().unwrap_or_default();
            classify_sqlstate(&code, constraint, idempotency_keys)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Failure::Transient,
        _ => Failure::Retry,
    }
}

/// SQLSTATEs that say nothing about the statement: a later attempt passes.
const TRANSIENT_STATES: [&str; 11] = [
    // Contention: another transaction got there first.
    "40001", "40P01", "55P03",
    // Time limits the operator set: statement, idle in transaction, transaction.
    "57014", "25P03", "25P04",
    // The server is shutting down or starting, or ended the session.
    "57P01", "57P02", "57P03", "57P05",
    // A read-only standby while a failover completes.
    "25006",
];

/// Whole classes of them: connection exceptions and insufficient resources.
const TRANSIENT_CLASSES: [&str; 2] = ["08", "53"];

fn classify_sqlstate(code: &str, constraint: &str, idempotency_keys: &[&str]) -> Failure {
    let class = code.get(..2).unwrap_or_default();
    match code {
        "23505" if idempotency_keys.contains(&constraint) => Failure::Retry,
        _ if TRANSIENT_STATES.contains(&code) || TRANSIENT_CLASSES.contains(&class) => {
            Failure::Transient
        }
        _ if class == "22" || class == "23" => Failure::Poison,
        _ => Failure::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_sorted_by_what_a_retry_can_change() {
        let keys = ["ledger_pkey"];
        assert_eq!(classify_sqlstate("22003", "", &keys), Failure::Poison);
        assert_eq!(classify_sqlstate("22021", "", &keys), Failure::Poison);
        assert_eq!(
            classify_sqlstate("23514", "balance_check", &keys),
            Failure::Poison
        );
        assert_eq!(
            classify_sqlstate("23505", "other_key", &keys),
            Failure::Poison
        );
        assert_eq!(
            classify_sqlstate("23505", "ledger_pkey", &keys),
            Failure::Retry
        );
        assert_eq!(classify_sqlstate("42P01", "", &keys), Failure::Retry);
        assert_eq!(classify_sqlstate("XX000", "", &keys), Failure::Retry);
    }

    #[test]
    fn contention_timeouts_and_a_database_going_away_are_transient() {
        for code in [
            "40001", "40P01", "55P03", "57014", "25P03", "25P04", "57P01", "57P02", "57P03",
            "57P05", "25006", "08000", "08003", "08006", "53100", "53200", "53300",
        ] {
            assert_eq!(
                classify_sqlstate(code, "", &[]),
                Failure::Transient,
                "{code}"
            );
        }
        // Neighbours that are not: a dropped database, an object in use.
        assert_eq!(classify_sqlstate("57P04", "", &[]), Failure::Retry);
        assert_eq!(classify_sqlstate("55006", "", &[]), Failure::Retry);
    }

    #[test]
    fn a_refusal_is_poison_wherever_it_is_in_the_chain() {
        let refused = anyhow::Error::from(Refused("another customer".into())).context("applying");
        assert_eq!(classify(&refused, &[]), Failure::Poison);
        assert_eq!(format!("{refused:#}"), "applying: another customer");
    }

    #[test]
    fn errors_without_a_database_cause_are_retried() {
        assert_eq!(classify(&anyhow::anyhow!("odd"), &[]), Failure::Retry);
        let pool = anyhow::Error::from(sqlx::Error::PoolTimedOut).context("crediting");
        assert_eq!(classify(&pool, &[]), Failure::Transient);
        let lost = anyhow::Error::from(sqlx::Error::Io(std::io::ErrorKind::BrokenPipe.into()));
        assert_eq!(classify(&lost, &[]), Failure::Transient);
    }
}
