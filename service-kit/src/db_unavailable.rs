//! Which database errors mean "the database is unavailable right now", so
//! that the services answer 503 + `Retry-After` for them instead of 500.
//!
//! Two kinds, because they promise different things:
//! - [`never_connected`]: no connection was had (pool exhausted past its
//!   acquire timeout, server refusing or unreachable). Nothing was sent, so
//!   nothing happened: safe to answer 503 for any request, writes included.
//! - [`connection_lost`]: the connection broke while in use. A read changed
//!   nothing, so a 503 is honest for reads; a write may have been committed
//!   (the COMMIT was sent but its answer lost), so writes must not call it a 503.

use std::io::ErrorKind;

/// SQLSTATEs that mean the server is going away or refuses connections:
/// `admin_shutdown`, `crash_shutdown`, `cannot_connect_now`, `too_many_connections`.
const UNAVAILABLE_STATES: [&str; 4] = ["57P01", "57P02", "57P03", "53300"];

/// No connection was obtained, so no statement was sent.
pub fn never_connected(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Io(io) => io.kind() == ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// The connection failed while in use (or could not be made): the outcome
/// of a write sent on it is unknown.
pub fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || UNAVAILABLE_STATES.contains(&code.as_ref())
        }),
        _ => false,
    }
}

/// For a request that only reads: either kind.
pub fn unavailable_for_read(error: &sqlx::Error) -> bool {
    never_connected(error) || connection_lost(error)
}

/// The first [`sqlx::Error`] in `error`'s chain of causes.
pub fn sqlx_cause(error: &anyhow::Error) -> Option<&sqlx::Error> {
    error.chain().find_map(|e| e.downcast_ref::<sqlx::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_pool_timeout_is_never_connected_wherever_it_sits_in_the_chain() {
        let error = Err::<(), _>(sqlx::Error::PoolTimedOut)
            .context("beginning the order transaction")
            .context("placing an order")
            .unwrap_err();
        assert!(sqlx_cause(&error).is_some_and(never_connected));
    }

    #[test]
    fn a_broken_connection_is_lost_not_never_connected() {
        let error = sqlx::Error::Io(std::io::Error::from(ErrorKind::UnexpectedEof));
        assert!(connection_lost(&error));
        assert!(!never_connected(&error));
        assert!(unavailable_for_read(&error));
    }

    #[test]
    fn other_errors_are_neither() {
        let error = sqlx::Error::RowNotFound;
        assert!(!unavailable_for_read(&error));
        assert!(sqlx_cause(&anyhow::anyhow!("no sqlx here")).is_none());
    }
}
