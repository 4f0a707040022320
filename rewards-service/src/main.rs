use clap::Parser;
use rewards_service::Application;
use rewards_service::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _traces = service_kit::telemetry::init("rewards-service")?;
    let _crash_points = service_kit::crash::setup();
    let config = Config::parse();
    let app = Application::build(config).await?;
    app.run_until_stopped(service_kit::shutdown::signal()).await
}
