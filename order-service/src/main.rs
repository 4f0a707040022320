use clap::Parser;
use order_service::Application;
use order_service::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _traces = service_kit::telemetry::init("order-service")?;
    let _crash_points = service_kit::crash::setup();
    let config = Config::parse();
    let app = Application::build(config).await?;
    app.run_until_stopped(service_kit::shutdown::signal()).await
}
