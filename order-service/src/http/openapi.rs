//! The OpenAPI document of order-service, served at `GET /openapi.json` and
//! committed as `docs/openapi/order-service.json` (the document of the
//! default set-up, everything on one listener).

use service_kit::openapi::Operations;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::{RefOr, Required};

use super::orders;

#[derive(OpenApi)]
#[openapi(
    paths(orders::place, orders::get, orders::list_all),
    tags((name = "orders", description = "Placing and reading orders.")),
)]
struct Api;

/// The document of the public listener.
pub fn document(separate_admin: bool) -> Document {
    service_kit::openapi::document(operations(separate_admin), separate_admin)
}

/// The handlers' descriptions. Unfiltered listing is an operator's
/// endpoint, so with an admin listener the public `GET /orders` needs a
/// `customer_id`.
pub(super) fn operations(separate_admin: bool) -> Operations {
    let mut api = Api::openapi();
    if separate_admin {
        let listing = api
            .paths
            .paths
            .get_mut("/orders")
            .and_then(|item| item.get.as_mut());
        let parameters = listing.and_then(|operation| operation.parameters.as_mut());
        for parameter in parameters.into_iter().flatten() {
            if let RefOr::T(Parameter {
                name,
                parameter_in: ParameterIn::Query,
                required,
                ..
            }) = parameter
                && name == "customer_id"
            {
                *required = Required::True;
            }
        }
    }
    Operations {
        api,
        operator: Document::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;
    use shared_events::contract::{check_committed, render};

    use super::*;
    use crate::config::DEFAULT_MAX_ORDER_TOTAL_MINOR;
    use crate::domain::{
        IdempotencyKey, MAX_ID_LEN, MAX_LINES, MAX_QUANTITY, MAX_UNIT_PRICE_MINOR,
    };

    /// `1000000` as the documents write it, `1,000,000`.
    fn thousands(n: i64) -> String {
        let digits = n.to_string();
        let mut grouped = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        grouped
    }

    fn json(document: &Document) -> Value {
        serde_json::to_value(document).expect("a document")
    }

    #[test]
    fn the_committed_openapi_document_is_the_codes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/order-service.json");
        if let Err(message) = check_committed(
            &path,
            &render(&document(false)),
            "cargo test -p order-service --lib openapi",
        ) {
            panic!("{message}");
        }
    }

    /// The limits in the `#[schema]` attributes are literals: they must be
    /// the ones the code enforces.
    #[test]
    fn the_documented_limits_are_the_codes() {
        let document = json(&document(false));
        let schemas = &document["components"]["schemas"];
        let id_pattern = format!("^[A-Za-z0-9_-]{{1,{MAX_ID_LEN}}}$");
        assert_eq!(
            schemas["PlaceOrderRequest"]["properties"]["customer_id"]["pattern"],
            id_pattern
        );
        assert_eq!(
            schemas["Order"]["properties"]["customer_id"]["pattern"],
            id_pattern
        );
        assert_eq!(
            schemas["PlaceOrderRequest"]["properties"]["lines"]["maxItems"],
            MAX_LINES
        );
        assert_eq!(
            schemas["OrderLine"]["properties"]["sku"]["maxLength"],
            MAX_ID_LEN
        );
        assert_eq!(
            schemas["OrderLine"]["properties"]["quantity"]["maximum"],
            MAX_QUANTITY
        );
        assert_eq!(
            schemas["OrderLine"]["properties"]["unit_price_minor"]["maximum"],
            MAX_UNIT_PRICE_MINOR
        );
        let default_total = thousands(DEFAULT_MAX_ORDER_TOTAL_MINOR);
        let total_rule = schemas["PlaceOrderRequest"]["description"].as_str();
        assert!(total_rule.is_some_and(|text| text.contains(&default_total)));
        let place = &document["paths"]["/orders"]["post"];
        let refused = place["responses"]["422"]["description"].as_str();
        assert!(refused.is_some_and(|text| text.contains(&default_total)));
        assert_eq!(place["parameters"][0]["name"], "Idempotency-Key");
        assert_eq!(
            place["parameters"][0]["schema"]["maxLength"],
            IdempotencyKey::MAX_LEN
        );
        let list = &document["paths"]["/orders"]["get"]["parameters"];
        let customer = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "customer_id");
        assert_eq!(customer.unwrap()["schema"]["pattern"], id_pattern);
    }

    #[test]
    fn with_an_admin_listener_the_public_document_has_no_operator_endpoints() {
        let alone = json(&document(false));
        let split = json(&document(true));
        assert!(alone["paths"]["/metrics"].is_object());
        assert!(split["paths"]["/metrics"].is_null());
        let customer_required = |document: &Value| {
            document["paths"]["/orders"]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "customer_id")
                .map(|p| p["required"].as_bool() == Some(true))
        };
        assert_eq!(customer_required(&alone), Some(false));
        assert_eq!(customer_required(&split), Some(true));
    }
}
