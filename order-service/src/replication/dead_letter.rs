//! Rows that cannot form an event — order lines without their order in the
//! same transaction, an order without lines — are filed in the dead-letter
//! stream with the reason and counted (`order_events_cdc_dead_lettered_rows_total`), before
//! the transaction's position is confirmed: never published half, never
//! dropped silently.

use pgwire_replication::Lsn;
use shared_events::jetstream::{self, DeadLetter, PublishError};

use super::{Capture, Reader, Rejected};

/// The consumer name dead letters of change capture are filed under.
const DEAD_LETTER_CONSUMER: &str = "order-service-cdc";

impl<C: Capture> Reader<C> {
    /// Files rows that cannot form an event in the dead-letter stream (one
    /// letter per transaction, its id derived from the commit position so a
    /// replay files it once) and counts them.
    pub(super) async fn dead_letter(
        &self,
        rejected: Rejected,
        end_lsn: Lsn,
    ) -> Result<(), PublishError> {
        let subject = self.settings.names.order_placed_subject();
        // The commit position stands in for the stream sequence the letter's
        // id derives from: one letter per transaction, however often replayed.
        let letter = DeadLetter {
            consumer: DEAD_LETTER_CONSUMER,
            reason: &rejected.reason,
            original_subject: &subject,
            original_stream_sequence: end_lsn.as_u64(),
        };
        jetstream::publish_dead_letter(
            self.publisher.jetstream(),
            &self.settings.names,
            &letter,
            rejected.payload,
        )
        .await?;
        tracing::error!(slot = %self.settings.slot, lsn = %end_lsn, reason = %rejected.reason, "captured rows dead-lettered");
        for (table, rows) in rejected.rows {
            service_kit::meters::cdc_dead_lettered_rows(self.settings.label, table, rows);
        }
        Ok(())
    }
}
