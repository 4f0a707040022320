use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{CustomerId, IdempotencyKey};

/// The outcome of claiming an idempotency key.
pub enum Claim {
    /// The key is new and now belongs to this transaction's order.
    Claimed,
    /// The key was used before, for `order_id`, by a request with `request_hash`.
    Taken {
        order_id: Uuid,
        request_hash: Vec<u8>,
    },
}

/// Claims the customer's `key` for `order_id`. A concurrent claim of the same
/// key blocks here until the first transaction ends, then sees its row.
pub async fn claim(
    conn: &mut PgConnection,
    customer: &CustomerId,
    key: &IdempotencyKey,
    request_hash: &[u8],
    order_id: Uuid,
) -> sqlx::Result<Claim> {
    let inserted = sqlx::query!(
        r#"INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (customer_id, key) DO NOTHING"#,
        customer.as_str(),
        key.as_str(),
        request_hash,
        order_id
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Claimed);
    }
    let row = sqlx::query!(
        "SELECT order_id, request_hash FROM idempotency_keys WHERE customer_id = $1 AND key = $2",
        customer.as_str(),
        key.as_str()
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Claim::Taken {
        order_id: row.order_id,
        request_hash: row.request_hash,
    })
}
