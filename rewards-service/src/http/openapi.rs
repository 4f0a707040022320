//! The OpenAPI document of rewards-service, served at `GET /openapi.json`
//! and committed as `docs/openapi/rewards-service.json` (the document of
//! the default set-up, everything on one listener).

use service_kit::openapi::Operations;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;

#[derive(OpenApi)]
#[openapi(
    paths(super::rewards),
    tags((name = "rewards", description = "Customers' reward points.")),
)]
struct Api;

#[derive(OpenApi)]
#[openapi(paths(super::ledger))]
struct Operator;

/// The document of the public listener.
pub fn document(separate_admin: bool) -> Document {
    service_kit::openapi::document(operations(), separate_admin)
}

/// The handlers' descriptions.
pub(super) fn operations() -> Operations {
    Operations {
        api: Api::openapi(),
        operator: Operator::openapi(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;
    use shared_events::contract::{check_committed, render};

    use super::*;
    use crate::http::{MAX_CUSTOMER_ID, MAX_PAGE};

    #[test]
    fn the_committed_openapi_document_is_the_codes() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/rewards-service.json");
        if let Err(message) = check_committed(
            &path,
            &render(&document(false)),
            "cargo test -p rewards-service --lib openapi",
        ) {
            panic!("{message}");
        }
    }

    /// The limits in the `#[utoipa::path]` attributes are literals: they
    /// must be the ones the code enforces.
    #[test]
    fn the_documented_limits_are_the_codes() {
        let document: Value = serde_json::to_value(document(false)).unwrap();
        let paths = &document["paths"];
        let id = &paths["/customers/{id}/rewards"]["get"]["parameters"][0];
        assert_eq!(id["schema"]["maxLength"], MAX_CUSTOMER_ID);
        let limit = paths["/ledger"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["maximum"], MAX_PAGE);
    }

    #[test]
    fn with_an_admin_listener_the_public_document_has_no_operator_endpoints() {
        let split: Value = serde_json::to_value(document(true)).unwrap();
        let paths: Vec<&String> = split["paths"].as_object().unwrap().keys().collect();
        assert_eq!(
            paths,
            [
                "/customers/{id}/rewards",
                "/healthz",
                "/openapi.json",
                "/readyz"
            ]
        );
    }
}
