//! Telling a message that can never be applied from a dependency that is
//! down for a while. A consumer that retries the first kind forever stalls
//! every message batched with it; one that gives up on the second kind
//! dead-letters healthy events during every database restart.

/// What a failure to apply an event says about retrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The same input fails the same way every time: a value PostgreSQL
    /// cannot store (SQLSTATE class 22: an overflow, a bad encoding) or a
    /// constraint it breaks (class 23). Isolated and dead-lettered at once.
    Poison,
    /// The database is unreachable or refusing work (connections, pool
    /// time-outs, SQLSTATE classes 08, 53, 57P0x, and 25006: a read-only
    /// standby while a failover completes). Nothing is wrong with the
    /// message: it is retried with backoff for as long as this lasts and is
    /// never dead-lettered for it.
    Unavailable,
    /// Anything else, such as a serialization failure (40001) or a deadlock
    /// (40P01): retried with backoff, dead-lettered after the consumer's
    /// maximum deliveries.
    Retry,
}

/// Classifies `error` by the first database error in its chain.
/// `idempotency_keys` names the unique constraints that make applying an
/// event idempotent: hitting one means a concurrent apply won a race, and a
/// retry finds the event applied.
pub fn classify(error: &anyhow::Error, idempotency_keys: &[&str]) -> Failure {
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
        | sqlx::Error::WorkerCrashed => Failure::Unavailable,
        _ => Failure::Retry,
    }
}

fn classify_sqlstate(code: &str, constraint: &str, idempotency_keys: &[&str]) -> Failure {
    match code {
        "23505" if idempotency_keys.contains(&constraint) => Failure::Retry,
        // Shutting down, or a read-only standby during a failover.
        "57P01" | "57P02" | "57P03" | "25006" => Failure::Unavailable,
        _ if code.starts_with("22") || code.starts_with("23") => Failure::Poison,
        _ if code.starts_with("08") || code.starts_with("53") => Failure::Unavailable,
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
        assert_eq!(classify_sqlstate("40001", "", &keys), Failure::Retry);
        assert_eq!(classify_sqlstate("40P01", "", &keys), Failure::Retry);
        assert_eq!(classify_sqlstate("57P01", "", &keys), Failure::Unavailable);
        assert_eq!(classify_sqlstate("08006", "", &keys), Failure::Unavailable);
        assert_eq!(classify_sqlstate("53300", "", &keys), Failure::Unavailable);
        assert_eq!(classify_sqlstate("25006", "", &keys), Failure::Unavailable);
    }

    #[test]
    fn errors_without_a_database_cause_are_retried() {
        assert_eq!(classify(&anyhow::anyhow!("odd"), &[]), Failure::Retry);
        let pool = anyhow::Error::from(sqlx::Error::PoolTimedOut).context("crediting");
        assert_eq!(classify(&pool, &[]), Failure::Unavailable);
    }
}
