use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_events::{Currency, OrderCancelled, OrderPlaced};
use utoipa::ToSchema;
use uuid::Uuid;

/// Most lines one order may have.
pub const MAX_LINES: usize = 100;
/// Most characters of a customer id or a SKU.
pub const MAX_ID_LEN: usize = 64;
/// Most units of one line.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Highest unit price, in minor units (100,000,000.00 in a two-decimal
/// currency).
pub const MAX_UNIT_PRICE_MINOR: i64 = 10_000_000_000;
/// Most characters of the reason an order was cancelled for.
pub const MAX_CANCEL_REASON_LEN: usize = 200;

// The line limits bound every total to 10^18 minor units, so a total never
// overflows 64 bits: the only limit left on the sum is the configured
// `MAX_ORDER_TOTAL_MINOR`, which the document states in words.
const _: () = assert!(
    match (MAX_LINES as i64).checked_mul(MAX_QUANTITY) {
        Some(units) => units.checked_mul(MAX_UNIT_PRICE_MINOR).is_some(),
        None => false,
    },
    "MAX_LINES x MAX_QUANTITY x MAX_UNIT_PRICE_MINOR must fit in an i64"
);

// The limits in the `#[schema]` attributes below are these constants (the
// attributes take literals only); a test of the OpenAPI document checks them.

/// The body of `POST /orders`, as the client sent it.
///
/// Beyond each field's own limits, one rule spans the lines: the total (the
/// sum of the lines' `quantity` × `unit_price_minor`) may be at most
/// `MAX_ORDER_TOTAL_MINOR` minor units, 1,000,000,000 unless the operator set
/// another; a larger total is a 422 `total_too_large`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// Letters, digits, `-` and `_`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub customer_id: String,
    /// An ISO 4217 code; one this service does not know is a 422 `unknown_currency`.
    #[schema(value_type = Currency)]
    pub currency: String,
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<OrderLine>,
}

/// One line of an order, as the client sends it, as it is stored and as
/// `OrderPlaced` carries it: one type, the event's. Numbers are signed so
/// that a negative value is reported as such rather than as a type error.
pub use shared_events::OrderPlacedLine as OrderLine;

/// A request that broke a business rule. `code` is stable for clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("customer_id must be 1 to {MAX_ID_LEN} characters of letters, digits, '-' or '_'")]
    InvalidCustomerId,
    #[error("{0:?} is not a known ISO 4217 currency code")]
    UnknownCurrency(String),
    #[error("an order needs at least one line")]
    NoLines,
    #[error("an order may have at most {MAX_LINES} lines, got {0}")]
    TooManyLines(usize),
    #[error("line {line}: sku must be 1 to {MAX_ID_LEN} printable characters")]
    InvalidSku { line: usize },
    #[error("line {line}: quantity must be 1 to {MAX_QUANTITY}, got {quantity}")]
    InvalidQuantity { line: usize, quantity: i64 },
    #[error("line {line}: unit_price_minor must not be negative, got {price}")]
    NegativePrice { line: usize, price: i64 },
    #[error("line {line}: unit_price_minor may be at most {MAX_UNIT_PRICE_MINOR}, got {price}")]
    PriceTooLarge { line: usize, price: i64 },
    #[error("the order total may be at most {0} minor units")]
    TotalTooLarge(i64),
    #[error("a cancellation's reason may be at most {MAX_CANCEL_REASON_LEN} characters, got {0}")]
    ReasonTooLong(usize),
}

impl ValidationError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidCustomerId => "invalid_customer_id",
            Self::UnknownCurrency(_) => "unknown_currency",
            Self::NoLines => "no_lines",
            Self::TooManyLines(_) => "too_many_lines",
            Self::InvalidSku { .. } => "invalid_sku",
            Self::InvalidQuantity { .. } => "invalid_quantity",
            Self::NegativePrice { .. } => "negative_price",
            Self::PriceTooLarge { .. } => "price_too_large",
            Self::TotalTooLarge(_) => "total_too_large",
            Self::ReasonTooLong(_) => "reason_too_long",
        }
    }
}

/// A stored status that is not one an order can have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "order status {status:?} with cancelled_at {cancelled_at:?} is not a status an order can have"
)]
pub struct InvalidStatus {
    status: String,
    cancelled_at: Option<DateTime<Utc>>,
}

/// Who placed an order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(String);

impl CustomerId {
    pub fn parse(raw: String) -> Result<Self, ValidationError> {
        let valid = !raw.is_empty()
            && raw.len() <= MAX_ID_LEN
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(Self(raw))
        } else {
            Err(ValidationError::InvalidCustomerId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A valid order that has not been stored yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    customer_id: CustomerId,
    currency: Currency,
    lines: Vec<OrderLine>,
    total_minor: i64,
}

impl TryFrom<PlaceOrderRequest> for NewOrder {
    type Error = ValidationError;

    fn try_from(request: PlaceOrderRequest) -> Result<Self, ValidationError> {
        let customer_id = CustomerId::parse(request.customer_id)?;
        let currency = Currency::from_code(&request.currency)
            .ok_or(ValidationError::UnknownCurrency(request.currency))?;
        if request.lines.is_empty() {
            return Err(ValidationError::NoLines);
        }
        if request.lines.len() > MAX_LINES {
            return Err(ValidationError::TooManyLines(request.lines.len()));
        }
        let mut total_minor: i64 = 0;
        let mut lines = Vec::with_capacity(request.lines.len());
        for (index, line) in request.lines.into_iter().enumerate() {
            let number = index + 1;
            let sku_ok = !line.sku.is_empty()
                && line.sku.chars().count() <= MAX_ID_LEN
                && !line.sku.chars().any(char::is_control);
            if !sku_ok {
                return Err(ValidationError::InvalidSku { line: number });
            }
            if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                return Err(ValidationError::InvalidQuantity {
                    line: number,
                    quantity: line.quantity,
                });
            }
            if line.unit_price_minor < 0 {
                return Err(ValidationError::NegativePrice {
                    line: number,
                    price: line.unit_price_minor,
                });
            }
            if line.unit_price_minor > MAX_UNIT_PRICE_MINOR {
                return Err(ValidationError::PriceTooLarge {
                    line: number,
                    price: line.unit_price_minor,
                });
            }
            total_minor += line.quantity * line.unit_price_minor;
            lines.push(line);
        }
        Ok(Self {
            customer_id,
            currency,
            lines,
            total_minor,
        })
    }
}

impl NewOrder {
    pub fn customer_id(&self) -> &CustomerId {
        &self.customer_id
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    pub fn total_minor(&self) -> i64 {
        self.total_minor
    }

    /// Refuses an order whose total is above `max` minor units: a total
    /// near the 64-bit limit would overflow a balance downstream.
    pub fn within_total(self, max: i64) -> Result<Self, ValidationError> {
        if self.total_minor > max {
            return Err(ValidationError::TotalTooLarge(max));
        }
        Ok(self)
    }

    /// A stable digest of the order's content, to tell an idempotent retry
    /// from a different request that reuses a key.
    pub fn fingerprint(&self) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.customer_id.as_str());
        hash.update([0]);
        hash.update(self.currency.code());
        for line in &self.lines {
            hash.update([0]);
            hash.update(&line.sku);
            hash.update([0]);
            hash.update(line.quantity.to_be_bytes());
            hash.update(line.unit_price_minor.to_be_bytes());
        }
        hash.finalize().to_vec()
    }
}

/// Where an order is in its life: placed, then possibly cancelled, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Placed,
    Cancelled,
}

impl OrderStatus {
    /// The word the API and the database use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status stored as `text`; any other text is an error.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "placed" => Some(Self::Placed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// What cancelling an order records: when, and why in the customer's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    pub cancelled_at: DateTime<Utc>,
    pub reason: Option<String>,
}

impl Cancellation {
    /// The cancellation an `OrderCancelled` describes; a reason longer than
    /// this service stores is an error.
    pub fn from_event(event: &OrderCancelled) -> Result<Self, ValidationError> {
        let length = event.reason.as_deref().map_or(0, |r| r.chars().count());
        if length > MAX_CANCEL_REASON_LEN {
            return Err(ValidationError::ReasonTooLong(length));
        }
        Ok(Self {
            cancelled_at: event.cancelled_at,
            reason: event.reason.clone(),
        })
    }
}

/// A stored order, as `GET /orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub customer_id: CustomerId,
    pub currency: Currency,
    /// The sum of the lines' `quantity` × `unit_price_minor`.
    #[schema(minimum = 0)]
    pub total_minor: i64,
    pub lines: Vec<OrderLine>,
    pub created_at: DateTime<Utc>,
    /// `placed`, or `cancelled` once the order was cancelled.
    pub status: OrderStatus,
    /// When the order was cancelled; absent while it is placed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl Order {
    /// `order` as stored under `id` at `created_at`.
    pub fn new(id: Uuid, order: &NewOrder, created_at: DateTime<Utc>) -> Self {
        Self {
            id,
            customer_id: order.customer_id.clone(),
            currency: order.currency,
            total_minor: order.total_minor,
            lines: order.lines.clone(),
            created_at,
            status: OrderStatus::Placed,
            cancelled_at: None,
        }
    }

    /// The order an `OrderPlaced` describes; an event whose customer or
    /// currency this service would refuse is an error.
    pub fn from_event(event: &OrderPlaced) -> Result<Self, ValidationError> {
        let mut order = Self::stored(
            event.order_id,
            &event.customer_id,
            &event.currency,
            event.total_minor,
            event.placed_at,
        )?;
        order.lines = event.lines.clone();
        Ok(order)
    }

    /// An order read back from storage (lines added by the caller); values
    /// this service would never have stored are an error.
    pub fn stored(
        id: Uuid,
        customer_id: &str,
        currency: &str,
        total_minor: i64,
        created_at: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            id,
            customer_id: CustomerId::parse(customer_id.to_owned())?,
            currency: Currency::from_code(currency)
                .ok_or_else(|| ValidationError::UnknownCurrency(currency.to_owned()))?,
            total_minor,
            lines: Vec::new(),
            created_at,
            status: OrderStatus::Placed,
            cancelled_at: None,
        })
    }

    /// The order with the status stored for it: `cancelled` with the time
    /// it was cancelled, or `placed` without one; anything else is an error
    /// (the database's constraints allow nothing else).
    pub fn with_stored_status(
        self,
        status: &str,
        cancelled_at: Option<DateTime<Utc>>,
    ) -> Result<Self, InvalidStatus> {
        match (OrderStatus::parse(status), cancelled_at) {
            (Some(OrderStatus::Placed), None) => Ok(self),
            (Some(OrderStatus::Cancelled), Some(at)) => Ok(self.cancelled(at)),
            _ => Err(InvalidStatus {
                status: status.to_owned(),
                cancelled_at,
            }),
        }
    }

    /// The order cancelled at `at`.
    pub fn cancelled(self, at: DateTime<Utc>) -> Self {
        Self {
            status: OrderStatus::Cancelled,
            cancelled_at: Some(at),
            ..self
        }
    }

    /// Whether this order has the content of `order` (ignoring id, time and
    /// status: a key sent again after its order was cancelled still names
    /// that order).
    pub fn has_content_of(&self, order: &NewOrder) -> bool {
        self.customer_id == order.customer_id
            && self.currency == order.currency
            && self.lines == order.lines
    }

    /// The event that announces this order.
    pub fn placed_event(&self) -> OrderPlaced {
        OrderPlaced {
            order_id: self.id,
            customer_id: self.customer_id.as_str().to_owned(),
            currency: self.currency.code().to_owned(),
            total_minor: self.total_minor,
            lines: self.lines.clone(),
            placed_at: self.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: Vec<(i64, i64)>) -> PlaceOrderRequest {
        PlaceOrderRequest {
            customer_id: "alice".into(),
            currency: "EUR".into(),
            lines: lines
                .into_iter()
                .map(|(quantity, unit_price_minor)| OrderLine {
                    sku: "SKU-1".into(),
                    quantity,
                    unit_price_minor,
                })
                .collect(),
        }
    }

    #[test]
    fn a_valid_request_gets_its_total() {
        let order = NewOrder::try_from(request(vec![(2, 1250), (1, 99)])).unwrap();
        assert_eq!(order.total_minor(), 2599);
    }

    #[test]
    fn each_broken_rule_has_its_error() {
        let cases = [
            (request(vec![]), "no_lines"),
            (request(vec![(0, 100)]), "invalid_quantity"),
            (request(vec![(-1, 100)]), "invalid_quantity"),
            (request(vec![(1, -5)]), "negative_price"),
            (request(vec![(i64::MAX, 2)]), "invalid_quantity"),
            (request(vec![(1, i64::MAX), (1, 1)]), "price_too_large"),
            (request(vec![(1, 1); MAX_LINES + 1]), "too_many_lines"),
        ];
        for (input, code) in cases {
            assert_eq!(NewOrder::try_from(input).unwrap_err().code(), code);
        }
        let mut unknown = request(vec![(1, 1)]);
        unknown.currency = "XYZ".into();
        assert_eq!(
            NewOrder::try_from(unknown).unwrap_err().code(),
            "unknown_currency"
        );
        let mut bad_customer = request(vec![(1, 1)]);
        bad_customer.customer_id = "a b".into();
        assert_eq!(
            NewOrder::try_from(bad_customer).unwrap_err().code(),
            "invalid_customer_id"
        );
    }

    #[test]
    fn a_sku_is_counted_in_characters() {
        let with_sku = |sku: String| {
            let mut order = request(vec![(1, 1)]);
            order.lines[0].sku = sku;
            NewOrder::try_from(order).map_err(|e| e.code())
        };
        assert!(with_sku("é".repeat(MAX_ID_LEN)).is_ok());
        assert_eq!(with_sku("é".repeat(MAX_ID_LEN + 1)), Err("invalid_sku"));
        assert_eq!(with_sku(String::new()), Err("invalid_sku"));
        assert_eq!(with_sku("a\u{85}b".into()), Err("invalid_sku"));
    }

    #[test]
    fn each_line_limit_admits_its_maximum_and_refuses_one_more() {
        let code = |quantity, price| {
            NewOrder::try_from(request(vec![(quantity, price)]))
                .map(|order| order.total_minor())
                .map_err(|e| e.code())
        };
        assert_eq!(code(MAX_QUANTITY, 1), Ok(MAX_QUANTITY));
        assert_eq!(code(MAX_QUANTITY + 1, 1), Err("invalid_quantity"));
        assert_eq!(code(1, MAX_UNIT_PRICE_MINOR), Ok(MAX_UNIT_PRICE_MINOR));
        assert_eq!(code(1, MAX_UNIT_PRICE_MINOR + 1), Err("price_too_large"));
    }

    #[test]
    fn the_largest_order_the_line_limits_admit_has_its_exact_total() {
        let largest = request(vec![(MAX_QUANTITY, MAX_UNIT_PRICE_MINOR); MAX_LINES]);
        assert_eq!(
            NewOrder::try_from(largest).unwrap().total_minor(),
            1_000_000_000_000_000_000
        );
    }

    #[test]
    fn a_total_above_the_maximum_is_refused() {
        let order = NewOrder::try_from(request(vec![(2, 500)])).unwrap();
        assert_eq!(order.clone().within_total(1000).unwrap(), order);
        assert_eq!(
            order.within_total(999).unwrap_err(),
            ValidationError::TotalTooLarge(999)
        );
    }

    #[test]
    fn an_order_shows_its_status_and_when_it_was_cancelled() {
        let new = NewOrder::try_from(request(vec![(1, 100)])).unwrap();
        let placed = Order::new(Uuid::nil(), &new, Utc::now());
        let json = serde_json::to_value(&placed).unwrap();
        assert_eq!(json["status"], "placed");
        assert!(json.get("cancelled_at").is_none(), "{json}");

        let at = "2026-12-10T09:30:00.123456Z".parse().unwrap();
        let cancelled = placed.clone().cancelled(at);
        let json = serde_json::to_value(&cancelled).unwrap();
        assert_eq!(json["status"], "cancelled");
        assert_eq!(json["cancelled_at"], "2026-12-10T09:30:00.123456Z");
        assert!(
            cancelled.has_content_of(&new),
            "a key replay ignores the status"
        );

        let stored = |status, at| placed.clone().with_stored_status(status, at);
        assert_eq!(stored("cancelled", Some(at)), Ok(cancelled));
        assert_eq!(stored("placed", None), Ok(placed.clone()));
        assert!(stored("placed", Some(at)).is_err());
        assert!(stored("cancelled", None).is_err());
        assert!(stored("shipped", None).is_err());
    }

    #[test]
    fn a_cancellation_keeps_a_reason_of_at_most_its_maximum() {
        let with_reason = |reason: String| {
            Cancellation::from_event(&OrderCancelled {
                order_id: Uuid::nil(),
                customer_id: "ivy".into(),
                currency: "EUR".into(),
                total_minor: 1,
                cancelled_at: Utc::now(),
                reason: Some(reason),
            })
            .map(|c| c.reason.map(|r| r.chars().count()))
            .map_err(|e| e.code())
        };
        let most = MAX_CANCEL_REASON_LEN;
        assert_eq!(with_reason("é".repeat(most)), Ok(Some(most)));
        assert_eq!(with_reason("é".repeat(most + 1)), Err("reason_too_long"));
    }

    #[test]
    fn the_fingerprint_changes_with_the_content() {
        let a = NewOrder::try_from(request(vec![(1, 100)])).unwrap();
        let b = NewOrder::try_from(request(vec![(1, 101)])).unwrap();
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
