//! The console's page and its API: `GET /` the page (plain HTML and a
//! little JavaScript, nothing fetched from elsewhere), `GET /events` the
//! live view (server-sent events, twice a second), and `POST /api/…` the
//! buttons.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde::Deserialize;

use super::{Command, Handle, MODES};
use harness::Mode;

const PAGE: &str = include_str!("page.html");

/// Serves the console on `address` until the process ends; returns the
/// address it listens on (port 0 picks a free one).
pub async fn serve(console: Handle, address: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/events", get(events))
        .route("/api/run", post(run))
        .route("/api/pause", post(pause))
        .route("/api/broker/{action}", post(broker))
        .route("/api/lanes/{mode}/{action}", post(lane))
        .with_state(console);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(address)
}

async fn events(
    State(console): State<Handle>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let views = futures::stream::unfold(console, |mut console| async move {
        let view = console.next_view().await?;
        let event = Event::default()
            .json_data(&view)
            .unwrap_or_else(|_| Event::default());
        Some((Ok(event), console))
    });
    Sse::new(views).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// 204 when done, else the reason in a JSON error body.
async fn obey(console: &Handle, command: Command) -> Response {
    match console.send(command).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(reason) => refused(StatusCode::CONFLICT, "refused", reason),
    }
}

#[derive(Deserialize)]
struct RunRequest {
    modes: Vec<String>,
    rate: u32,
}

fn mode(name: &str) -> Option<Mode> {
    MODES.into_iter().find(|mode| mode.name() == name)
}

/// The error body the services use too: `{"error": {"code", "message"}}`.
fn refused(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "code": code, "message": message.into() } })),
    )
        .into_response()
}

async fn run(State(console): State<Handle>, Json(request): Json<RunRequest>) -> Response {
    let modes: Option<Vec<Mode>> = request.modes.iter().map(|name| mode(name)).collect();
    let Some(modes) = modes.filter(|modes| !modes.is_empty()) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "unknown_mode",
            "choose one or more of outbox, cdc, self-read, dual-write",
        );
    };
    if request.rate > 500 {
        return refused(
            StatusCode::BAD_REQUEST,
            "rate_too_high",
            "at most 500 orders/s per mode",
        );
    }
    obey(
        &console,
        Command::Run {
            modes,
            rate: request.rate,
        },
    )
    .await
}

async fn pause(State(console): State<Handle>) -> Response {
    obey(&console, Command::Pause).await
}

async fn broker(State(console): State<Handle>, Path(action): Path<String>) -> Response {
    let command = match action.as_str() {
        "stop" => Command::Broker(false),
        "start" => Command::Broker(true),
        "delay" => Command::DelayBroker(1000),
        "undelay" => Command::DelayBroker(0),
        _ => {
            return refused(
                StatusCode::NOT_FOUND,
                "not_found",
                "stop, start, delay or undelay",
            );
        }
    };
    obey(&console, command).await
}

async fn lane(
    State(console): State<Handle>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let Some(mode) = mode(&name) else {
        return refused(
            StatusCode::NOT_FOUND,
            "unknown_mode",
            format!("no mode {name:?}"),
        );
    };
    let command = match action.as_str() {
        "kill-order-service" => Command::Kill {
            mode,
            order_service: true,
        },
        "kill-rewards-service" => Command::Kill {
            mode,
            order_service: false,
        },
        "crash" => Command::Crash(mode),
        "follow" => Command::Follow(mode),
        _ => {
            return refused(
                StatusCode::NOT_FOUND,
                "not_found",
                "kill-order-service, kill-rewards-service, crash or follow",
            );
        }
    };
    obey(&console, command).await
}
