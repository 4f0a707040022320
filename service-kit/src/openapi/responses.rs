//! The error answers many handlers give, declared once for their
//! `#[utoipa::path]`: a handler lists the type in its `responses(...)` beside
//! its own tuples, and the document shows the answer inline, as if the
//! handler had written it.
//!
//! Only what reads the same for every handler that gives it is here. An
//! answer whose codes differ from handler to handler (a 400, or a 503 with
//! codes besides `database_unavailable`) stays the handler's own tuple,
//! since its description is the list of its codes.
//!
//! ```text
//! #[utoipa::path(
//!     get,
//!     path = "/things/{id}",
//!     responses(
//!         (status = 200, description = "The thing.", body = Thing),
//!         (status = 400, description = "- `invalid_id`: ...", body = ErrorBody),
//!         Internal,
//!         DatabaseUnavailable,
//!     ),
//! )]
//! ```

use utoipa::IntoResponses;

use crate::http::ErrorBody;

/// 500 `internal`: an error the handler did not expect, answered by
/// [`crate::http::internal_error`]; the client learns nothing more, the log
/// has it.
#[derive(IntoResponses)]
#[response(
    status = 500,
    description = "- `internal`: an unexpected error; the log has it."
)]
pub struct Internal(
    #[expect(
        dead_code,
        reason = "never built: the derive reads only the body's type"
    )]
    ErrorBody<'static>,
);

/// 503 `database_unavailable` with `Retry-After`, for a request that only
/// reads: the database could not be read (no connection within
/// `DB_ACQUIRE_TIMEOUT`, or it went away), so nothing changed and a retry is
/// safe. Answered by [`crate::http::unavailable`].
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "Retry after `Retry-After`.\n- `database_unavailable`: the database could not be read.",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying.")),
)]
pub struct DatabaseUnavailable(
    #[expect(
        dead_code,
        reason = "never built: the derive reads only the body's type"
    )]
    ErrorBody<'static>,
);

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use utoipa::OpenApi;

    use super::*;
    use crate::openapi::{Operations, document};

    #[utoipa::path(
        get,
        path = "/things",
        responses((status = 200, description = "Things."), Internal, DatabaseUnavailable),
    )]
    #[allow(dead_code)]
    fn things() {}

    #[derive(OpenApi)]
    #[openapi(paths(things))]
    struct Api;

    #[derive(OpenApi)]
    struct Operator;

    #[test]
    fn the_shared_answers_read_as_if_the_handler_had_written_them() {
        let operations = Operations {
            api: Api::openapi(),
            operator: Operator::openapi(),
        };
        let document: Value = serde_json::to_value(document(operations, false)).unwrap();
        let responses = &document["paths"]["/things"]["get"]["responses"];
        let body = "#/components/schemas/ErrorBody";
        assert_eq!(
            responses["500"]["description"],
            "- `internal`: an unexpected error; the log has it."
        );
        assert_eq!(
            responses["500"]["content"]["application/json"]["schema"]["$ref"],
            body
        );
        let unavailable = &responses["503"];
        assert_eq!(
            unavailable["content"]["application/json"]["schema"]["$ref"],
            body
        );
        assert_eq!(
            unavailable["headers"]["Retry-After"]["description"],
            "Seconds to wait before retrying."
        );
        // Inline, so the load-shedding layer adds its code to the same answer.
        let description = unavailable["description"].as_str().unwrap();
        assert!(
            description.contains("- `database_unavailable`:"),
            "{description}"
        );
        assert!(description.contains("- `overloaded`:"), "{description}");
    }
}
