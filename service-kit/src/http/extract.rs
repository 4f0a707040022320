//! Input the framework cannot read (a body, a query string, a path
//! segment), answered in the JSON error body with a code of its own instead
//! of axum's plain-text rejections.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::error_response;

/// Like [`axum::Json`], but a body that cannot be read as `T` is answered
/// with the JSON error body: 400 malformed JSON, 413 too large, 415 wrong
/// content type, 422 well-formed JSON of the wrong shape.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> Response {
    let status = rejection.status();
    let code = match rejection {
        JsonRejection::JsonDataError(_) => "invalid_body",
        JsonRejection::JsonSyntaxError(_) => "malformed_json",
        JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        _ => "bad_request",
    };
    error_response(status, code, &rejection.body_text())
}

/// A query string that could not be parsed, as a JSON 400.
pub fn query_rejection(rejection: &QueryRejection) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        &rejection.body_text(),
    )
}

/// A path segment that could not be parsed (e.g. not UTF-8), as a JSON 400.
pub fn path_rejection(rejection: &PathRejection) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_path",
        &rejection.body_text(),
    )
}
