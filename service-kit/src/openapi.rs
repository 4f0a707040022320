//! The OpenAPI document a service serves at `GET /openapi.json` on its
//! public listener: the service's operations as its handlers describe them,
//! the answers the shared layers of [`crate::ops`] add to them, and the
//! endpoints every service has (health, readiness, metrics, the document).
//!
//! A status a layer can give is declared here, by the code that adds the
//! layer, so that the handlers declare only their own; the error answers
//! many handlers share are declared once in [`responses`].

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, Parameter};
use utoipa::openapi::schema::SchemaType;
use utoipa::openapi::{
    Content, Header, OpenApi as Document, Ref, RefOr, ResponseBuilder, Schema, Type,
};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use crate::http::ErrorBody;

pub mod responses;

/// A service's operations, as its handlers' `#[utoipa::path]` describe them.
pub struct Operations {
    /// The public API: under the request timeout and the concurrency cap.
    pub api: Document,
    /// The operator endpoints besides `/metrics`: under the request timeout.
    /// With an admin listener they are not on the public one, nor in its document.
    pub operator: Document,
}

/// The document of the public listener: `operations` with the answers of
/// the layers, the probes and this document's own endpoint, and, unless
/// the operator endpoints have a listener of their own, those and `/metrics`.
pub fn document(operations: Operations, separate_admin: bool) -> Document {
    let Operations {
        mut api,
        mut operator,
    } = operations;
    for_each_operation(&mut api, never_null);
    for_each_operation(&mut operator, never_null);
    for_each_operation(&mut api, |operation| {
        add_error(
            operation,
            "503",
            "overloaded",
            "more than `MAX_CONCURRENT_REQUESTS` requests were in flight: refused before anything ran.",
        );
        add_timeout(operation);
    });
    if !separate_admin {
        for_each_operation(&mut operator, add_timeout);
        api.merge(operator);
        api.merge(Metrics::openapi());
    }
    api.merge(Common::openapi());
    api
}

/// The answer of `GET /openapi.json`: `document` rendered once, as JSON.
pub fn rendered(document: &Document) -> Bytes {
    Bytes::from(
        document
            .to_json()
            .expect("an OpenAPI document always serializes"),
    )
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    summary = "This document",
    responses((status = 200, description = "This document (OpenAPI 3.1).", body = serde_json::Value)),
)]
pub(crate) fn serve(rendered: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], rendered).into_response()
}

/// What every listener serves, and every document names.
#[derive(OpenApi)]
#[openapi(
    paths(crate::http::probes::live, crate::http::probes::ready, serve),
    components(schemas(ErrorBody)),
    tags(
        (name = "probes", description = "Health and readiness, on every listener; never refused for load."),
        (name = "operator", description = "For operators: on the admin listener only when `ADMIN_LISTEN_ADDR` is set."),
        (name = "meta", description = "This document."),
    ),
)]
struct Common;

/// `/metrics`, where the operator endpoints are.
#[derive(OpenApi)]
#[openapi(paths(crate::http::probes::metrics))]
struct Metrics;

/// Every request runs under `REQUEST_TIMEOUT`; one whose handler waits (on
/// the database, the broker) can run past it.
fn add_timeout(operation: &mut Operation) {
    add_error(
        operation,
        "504",
        "timeout",
        "the request ran past `REQUEST_TIMEOUT` and was abandoned: its outcome is unknown.",
    );
}

/// Adds the error `code` to the response for `status`, creating it (an
/// [`ErrorBody`] with `Retry-After`) if the operation declares none. An
/// operation that declares the status itself declares a body that an
/// [`ErrorBody`] also fits.
fn add_error(operation: &mut Operation, status: &str, code: &str, meaning: &str) {
    let line = format!("- `{code}`: {meaning}");
    match operation.responses.responses.get_mut(status) {
        Some(RefOr::T(response)) => {
            response.description.push('\n');
            response.description.push_str(&line);
            response
                .headers
                .entry("Retry-After".to_owned())
                .or_insert_with(|| RefOr::T(retry_after()));
        }
        _ => {
            let response = ResponseBuilder::new()
                .description(line)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
                )
                .header("Retry-After", retry_after())
                .build();
            operation
                .responses
                .responses
                .insert(status.to_owned(), RefOr::T(response));
        }
    }
}

/// The `Retry-After` header of the 503 and 504 answers, as the handlers
/// and [`responses`] declare it (`("Retry-After" = u32, ...)`).
fn retry_after() -> Header {
    let mut header = Header::new(u32::schema());
    header.description = Some("Seconds to wait before retrying.".to_owned());
    header
}

/// A parameter is sent with a value or not at all, never as `null`; utoipa
/// makes an optional header parameter nullable all the same.
fn never_null(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        if let RefOr::T(Parameter {
            schema: Some(RefOr::T(Schema::Object(schema))),
            ..
        }) = parameter
            && let SchemaType::Array(types) = &schema.schema_type
        {
            let types: Vec<Type> = types
                .iter()
                .filter(|t| **t != Type::Null)
                .cloned()
                .collect();
            schema.schema_type = match types.as_slice() {
                [single] => SchemaType::Type(single.clone()),
                _ => SchemaType::Array(types),
            };
        }
    }
}

fn for_each_operation(document: &mut Document, mut f: impl FnMut(&mut Operation)) {
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        operations.into_iter().flatten().for_each(&mut f);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[utoipa::path(
        get,
        path = "/things",
        params(("X-Token" = Option<String>, Header)),
        responses(
            (status = 200, description = "Things."),
            (status = 503, description = "- `database_unavailable`: no database.", body = ErrorBody,
                headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        ),
    )]
    #[allow(dead_code)]
    fn things() {}

    #[utoipa::path(get, path = "/audit", responses((status = 200, description = "Audit.")))]
    #[allow(dead_code)]
    fn audit() {}

    #[derive(OpenApi)]
    #[openapi(paths(things))]
    struct Api;

    #[derive(OpenApi)]
    #[openapi(paths(audit))]
    struct Operator;

    fn rendered(separate_admin: bool) -> Value {
        let operations = Operations {
            api: Api::openapi(),
            operator: Operator::openapi(),
        };
        serde_json::to_value(document(operations, separate_admin)).unwrap()
    }

    #[test]
    fn the_layers_add_their_answers_to_the_operations_they_wrap() {
        let document = rendered(false);
        let things = &document["paths"]["/things"]["get"]["responses"];
        assert_eq!(
            things["503"]["description"],
            "- `database_unavailable`: no database.\n- `overloaded`: more than \
             `MAX_CONCURRENT_REQUESTS` requests were in flight: refused before anything ran."
        );
        assert!(
            things["504"]["description"]
                .as_str()
                .unwrap()
                .contains("`timeout`")
        );
        assert!(things["504"]["headers"]["Retry-After"].is_object());
        let audit = &document["paths"]["/audit"]["get"]["responses"];
        assert!(audit["503"].is_null(), "operator endpoints are not shed");
        assert!(audit["504"].is_object());
        assert!(document["paths"]["/metrics"].is_object());
        assert!(document["components"]["schemas"]["ErrorBody"].is_object());
    }

    #[test]
    fn an_admin_listener_takes_the_operator_endpoints_out_of_the_document() {
        let document = rendered(true);
        let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
        assert_eq!(paths, ["/healthz", "/openapi.json", "/readyz", "/things"]);
    }

    #[test]
    fn an_optional_header_is_not_nullable() {
        let document = rendered(false);
        let token = &document["paths"]["/things"]["get"]["parameters"][0];
        assert_eq!(token["required"], false);
        assert_eq!(token["schema"]["type"], "string");
    }
}
