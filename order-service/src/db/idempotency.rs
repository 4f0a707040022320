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

#[cfg(test)]
mod tests {
    use sqlx::PgPool;

    use super::*;

    fn customer(name: &str) -> CustomerId {
        CustomerId::parse(name.to_owned()).expect("a valid customer id")
    }

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey::parse(text).expect("a valid key")
    }

    // The key's order_id references orders(id) with a deferred check, so each
    // test claims inside one transaction and never commits it.

    #[sqlx::test]
    async fn a_new_key_is_claimed(pool: PgPool) -> sqlx::Result<()> {
        let mut tx = pool.begin().await?;
        let claim = claim(
            &mut tx,
            &customer("ivy"),
            &key("k1"),
            b"hash",
            Uuid::now_v7(),
        )
        .await?;
        assert!(matches!(claim, Claim::Claimed));
        Ok(())
    }

    #[sqlx::test]
    async fn a_used_key_is_taken_by_its_first_order_and_hash(pool: PgPool) -> sqlx::Result<()> {
        let mut tx = pool.begin().await?;
        let (ivy, k1) = (customer("ivy"), key("k1"));
        let first = Uuid::now_v7();
        assert!(matches!(
            claim(&mut tx, &ivy, &k1, b"first", first).await?,
            Claim::Claimed
        ));
        match claim(&mut tx, &ivy, &k1, b"second", Uuid::now_v7()).await? {
            Claim::Taken {
                order_id,
                request_hash,
            } => {
                assert_eq!(order_id, first);
                assert_eq!(request_hash, b"first");
            }
            Claim::Claimed => panic!("a used key was claimed again"),
        }
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
            .fetch_one(&mut *tx)
            .await?;
        assert_eq!(rows, 1);
        Ok(())
    }

    #[sqlx::test]
    async fn the_same_key_belongs_to_each_customer_separately(pool: PgPool) -> sqlx::Result<()> {
        let mut tx = pool.begin().await?;
        let k1 = key("k1");
        for name in ["ivy", "jon"] {
            let claim = claim(&mut tx, &customer(name), &k1, b"hash", Uuid::now_v7()).await?;
            assert!(matches!(claim, Claim::Claimed), "{name}");
        }
        Ok(())
    }
}
