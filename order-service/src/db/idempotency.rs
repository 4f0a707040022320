use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{CustomerId, IdempotencyKey};

/// The order and request fingerprint the customer's `key` stands for, if
/// it was claimed.
pub async fn find(
    conn: &mut PgConnection,
    customer: &CustomerId,
    key: &IdempotencyKey,
) -> sqlx::Result<Option<(Uuid, Vec<u8>)>> {
    let row = sqlx::query!(
        "SELECT order_id, request_hash FROM idempotency_keys WHERE customer_id = $1 AND key = $2",
        customer.as_str(),
        key.as_str()
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| (r.order_id, r.request_hash)))
}
