//! What an idempotency key stands for, by the rule every mode follows: the
//! order whose id derives from the customer and the key
//! ([`IdempotencyKey::order_id`]), or, for a key claimed before order ids
//! were derived from keys, the order the key table names.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{CustomerId, IdempotencyKey};

/// The id of the order the customer's `key` placed, if it placed one.
pub async fn order_of(
    conn: &mut PgConnection,
    customer: &CustomerId,
    key: &IdempotencyKey,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(
                  (SELECT order_id FROM idempotency_keys WHERE customer_id = $1 AND key = $2),
                  (SELECT id FROM orders WHERE id = $3)) AS order_id"#,
        customer.as_str(),
        key.as_str(),
        key.order_id(customer),
    )
    .fetch_one(conn)
    .await
}
