//! Idempotency keys, and the one rule that gives a key its meaning in every
//! mode: an order's id is derived from its customer and its key.

use shared_events::ID_NAMESPACE;
use uuid::Uuid;

use super::CustomerId;

/// The value of an `Idempotency-Key` header: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &str) -> Option<Self> {
        let valid = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_graphic());
        valid.then(|| Self(raw.to_owned()))
    }

    /// A new random key, for a request that came without one: its order is
    /// placed under it, so that a request whose outcome is unknown can be
    /// retried with it.
    pub fn generate() -> Self {
        Self(Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the order `customer` places under this key: the same in
    /// every mode and on every retry, and different for two customers who
    /// happen to pick the same key. Every mode places under it and looks a
    /// key up by it, so a key keeps its meaning across a switch of mode.
    pub fn order_id(&self, customer: &CustomerId) -> Uuid {
        let name = format!("order:{}:{}", customer.as_str(), self.as_str());
        Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_per_customer() {
        let key = IdempotencyKey::parse("k-1").unwrap();
        let alice = CustomerId::parse("alice".into()).unwrap();
        let bob = CustomerId::parse("bob".into()).unwrap();
        assert_eq!(key.order_id(&alice), key.order_id(&alice));
        assert_ne!(key.order_id(&alice), key.order_id(&bob));
    }

    /// Orders placed before this rule was shared kept their ids: a change
    /// of the derivation would give every key placed since a second order.
    #[test]
    fn the_derivation_is_the_one_self_read_has_always_used() {
        let key = IdempotencyKey::parse("k-1").unwrap();
        let alice = CustomerId::parse("alice".into()).unwrap();
        assert_eq!(
            key.order_id(&alice),
            Uuid::new_v5(&ID_NAMESPACE, b"order:alice:k-1")
        );
    }
}
