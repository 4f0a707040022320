//! A [`Core`] over dependencies that cannot be reached, for the services'
//! in-process HTTP tests. It is built only with the `test-support` feature,
//! which the services turn on for their tests alone
//! (`[dev-dependencies]`), so no production build can make one.

use std::sync::Arc;
use std::time::Duration;

use shared_events::Names;
use shared_events::jetstream::Publisher;
use sqlx::postgres::PgPoolOptions;

use super::Core;

impl Core {
    /// A core whose database and NATS server cannot be reached (port 1),
    /// for in-process tests of what must be answered before either is used:
    /// a request that gets past its checks fails or hangs instead of passing.
    pub async fn unreachable() -> Self {
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .expect("a client that connects in the background");
        Self {
            pool: PgPoolOptions::new()
                .acquire_timeout(Duration::from_secs(1))
                .connect_lazy("postgres://postgres@127.0.0.1:1/nowhere")
                .expect("a valid URL"),
            jetstream: async_nats::jetstream::new(nats.clone()),
            publisher: Publisher::new(nats.clone(), false),
            nats,
            names: Names::new("unreachable").expect("a valid prefix"),
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            reported_consumers: Arc::default(),
        }
    }
}
