//! Events about orders.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::envelope::{DecodeError, Envelope, Event};

/// An order was stored (or, in self-read mode, accepted) by order-service.
///
/// Version 1. Money is in integer minor units of `currency` (cents for EUR).
// The constraints of its JSON Schema (`docs/schemas/order-placed.v1.json`)
// are the ones rewards-service checks before it credits an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    #[schemars(length(min = 1))]
    pub customer_id: String,
    /// ISO 4217 code.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
    /// The sum of the lines' `quantity` × `unit_price_minor`.
    #[schemars(range(min = 0))]
    pub total_minor: i64,
    #[schemars(length(min = 1))]
    pub lines: Vec<OrderPlacedLine>,
    pub placed_at: DateTime<Utc>,
}

/// One line of an order: `quantity` units of `sku` at `unit_price_minor` each.
// Also the line of order-service's API, whose OpenAPI document carries the
// limits order-service enforces on the lines it takes (so on every line it
// publishes): `sku` is 1 to 64 characters, none of them a control character;
// `quantity` is at most 1,000,000 and `unit_price_minor` at most 10^10. The
// event's JSON Schema leaves those two maxima out: rewards-service checks
// events against it, and an event published before the limits existed
// must still be credited, not dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OrderLine)]
pub struct OrderPlacedLine {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub sku: String,
    #[schemars(range(min = 1))]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i64,
    /// Minor units of the order's currency.
    #[schemars(range(min = 0))]
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    pub unit_price_minor: i64,
}

impl Event for OrderPlaced {
    const EVENT_TYPE: &'static str = "OrderPlaced";
    const SCHEMA_VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "Order";
    const POSITION: u32 = 1;

    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }
}

/// An order was cancelled: what a consumer needs to take back what it
/// gave for the order, on its own (the points of `total_minor` in
/// `currency`), without the `OrderPlaced` at hand.
///
/// Version 1. Always the second event of an order's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    #[schemars(length(min = 1))]
    pub customer_id: String,
    /// ISO 4217 code.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
    /// The cancelled order's total, as its `OrderPlaced` stated it.
    #[schemars(range(min = 0))]
    pub total_minor: i64,
    pub cancelled_at: DateTime<Utc>,
    /// Why, in the customer's words; at most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub reason: Option<String>,
}

impl Event for OrderCancelled {
    const EVENT_TYPE: &'static str = "OrderCancelled";
    const SCHEMA_VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "Order";
    const POSITION: u32 = 2;

    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }
}

/// Any event of an order's life, decoded by its type.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderEvent {
    Placed(Envelope<OrderPlaced>),
    Cancelled(Envelope<OrderCancelled>),
}

impl OrderEvent {
    /// Decodes `bytes` as whichever event of an order they carry.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Type {
            event_type: String,
        }
        let event_type = serde_json::from_slice::<Type>(bytes)
            .map_err(DecodeError::Malformed)?
            .event_type;
        match event_type.as_str() {
            OrderCancelled::EVENT_TYPE => Envelope::decode(bytes).map(Self::Cancelled),
            // Anything else is reported as not an `OrderPlaced`.
            _ => Envelope::decode(bytes).map(Self::Placed),
        }
    }

    /// The order the event is about.
    pub fn order_id(&self) -> Uuid {
        match self {
            Self::Placed(event) => event.aggregate_id,
            Self::Cancelled(event) => event.aggregate_id,
        }
    }

    /// The event's id, which the broker and the consumers deduplicate by.
    pub fn event_id(&self) -> Uuid {
        match self {
            Self::Placed(event) => event.event_id,
            Self::Cancelled(event) => event.event_id,
        }
    }
}

/// Namespace of the ids derived deterministically (UUID v5) in this system.
pub const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_722d_6576_656e_7473_2d69_6473);

/// The event id of an order's `OrderPlaced` when it is derived from the order
/// (change data capture, repair): the same on every replay, so the broker and
/// the consumers recognise a replay as a duplicate.
pub fn placed_event_id(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, format!("OrderPlaced:{order_id}").as_bytes())
}

/// The event id of an order's `OrderCancelled`, derived from the order: an
/// order is cancelled once, so every try to cancel it publishes this id.
pub fn cancelled_event_id(order_id: Uuid) -> Uuid {
    Uuid::new_v5(
        &ID_NAMESPACE,
        format!("OrderCancelled:{order_id}").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn placed() -> Envelope<OrderPlaced> {
        Envelope::new(
            Uuid::now_v7(),
            Utc::now(),
            OrderPlaced {
                order_id: Uuid::now_v7(),
                customer_id: "ivy".into(),
                currency: "EUR".into(),
                total_minor: 100,
                lines: vec![OrderPlacedLine {
                    sku: "SKU-1".into(),
                    quantity: 1,
                    unit_price_minor: 100,
                }],
                placed_at: Utc::now(),
            },
        )
    }

    fn cancelled(order_id: Uuid) -> Envelope<OrderCancelled> {
        Envelope::new(
            cancelled_event_id(order_id),
            Utc::now(),
            OrderCancelled {
                order_id,
                customer_id: "ivy".into(),
                currency: "EUR".into(),
                total_minor: 100,
                cancelled_at: Utc::now(),
                reason: Some("changed my mind".into()),
            },
        )
    }

    #[test]
    fn each_event_of_an_order_decodes_as_its_type_at_its_position() {
        let placed = placed();
        let cancelled = cancelled(placed.aggregate_id);
        assert_eq!((placed.position, cancelled.position), (1, 2));
        let decoded = OrderEvent::decode(&placed.to_bytes()).unwrap();
        assert_eq!(decoded, OrderEvent::Placed(placed.clone()));
        let decoded = OrderEvent::decode(&cancelled.to_bytes()).unwrap();
        assert_eq!(decoded.order_id(), placed.aggregate_id);
        assert_eq!(decoded, OrderEvent::Cancelled(cancelled));
    }

    #[test]
    fn an_event_out_of_its_place_or_of_an_unknown_type_is_refused() {
        let mut wire: serde_json::Value = serde_json::from_slice(&placed().to_bytes()).unwrap();
        wire["position"] = 2.into();
        let bytes = serde_json::to_vec(&wire).unwrap();
        assert!(matches!(
            OrderEvent::decode(&bytes),
            Err(DecodeError::WrongPosition {
                found: 2,
                expected: 1,
                ..
            })
        ));
        wire["position"] = 1.into();
        wire["event_type"] = "OrderShipped".into();
        let bytes = serde_json::to_vec(&wire).unwrap();
        assert!(matches!(
            OrderEvent::decode(&bytes),
            Err(DecodeError::UnexpectedType { .. })
        ));
    }

    /// Events stored before positions were carried decode as their type's.
    #[test]
    fn an_event_without_a_position_takes_its_types() {
        let event = placed();
        let mut wire: serde_json::Value = serde_json::from_slice(&event.to_bytes()).unwrap();
        wire.as_object_mut().unwrap().remove("position");
        let decoded = Envelope::<OrderPlaced>::decode(&serde_json::to_vec(&wire).unwrap());
        assert_eq!(decoded.unwrap(), event);
    }
}
