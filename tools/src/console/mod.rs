//! `order-events console`: the patterns side by side, live, in a browser.
//!
//! The console runs its own world, as the tests do: a private PostgreSQL
//! (the harness's), a private nats-server that the console may stop and
//! start, a proxy in front of it that may delay the broker's replies, and
//! for each mode chosen (a *lane*) an order-service and a rewards-service
//! on databases of their own. A load generator places orders at the chosen
//! rate, each with an `Idempotency-Key`, retrying a request that got no
//! answer with the same key, as a careful client does. A supervisor starts
//! again any service that died. A sampler reads, twice a second, what each
//! lane placed, stored and credited, the consistency lag (order placed →
//! credited) over the last seconds, and the audit: orders older than a few
//! seconds without a credit. The page ([`web`]) shows it all over
//! server-sent events and has the buttons that break things.
//!
//! [`world`] holds the servers, the lanes and their load, and does what the
//! buttons ask; [`lane`] is one mode's services, its client and its
//! supervisor; [`sampler`] reads what a lane did, and [`view`] is what the
//! page shows of it; [`Handle`] is the console seen from another thread, as
//! the page and `main` see it.

mod handle;
mod lane;
mod sampler;
mod view;
pub mod web;
mod world;

use harness::Mode;

pub use self::handle::Handle;
pub use self::sampler::{AUDIT_GRACE, LAG_WINDOW};
pub use self::view::{Followed, LaneView, Sample, View};

/// The modes a console can run, in the order the page shows them.
pub const MODES: [Mode; 4] = [Mode::Outbox, Mode::Cdc, Mode::SelfRead, Mode::DualWrite];

/// A mode on the console's command line: [`Mode`]'s `ValueEnum`, narrowed
/// to [`MODES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleMode(pub Mode);

impl clap::ValueEnum for ConsoleMode {
    fn value_variants<'a>() -> &'a [Self] {
        const CHOICES: [ConsoleMode; MODES.len()] = {
            let mut choices = [ConsoleMode(MODES[0]); MODES.len()];
            let mut i = 1;
            while i < MODES.len() {
                choices[i] = ConsoleMode(MODES[i]);
                i += 1;
            }
            choices
        };
        &CHOICES
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        self.0.to_possible_value()
    }
}

/// What the page asks the console to do.
#[derive(Debug, Clone)]
pub enum Command {
    Run { modes: Vec<Mode>, rate: u32 },
    Pause,
    Kill { mode: Mode, order_service: bool },
    Crash(Mode),
    Follow(Mode),
    Broker(bool),
    DelayBroker(u32),
}

/// Stops the console when dropped, however the scope is left (a test's
/// panic included): no service outlives it.
pub struct StopOnDrop(pub Handle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// `order-events console`: starts the world, serves the page on `listen`,
/// runs `modes` at `rate` right away when given, and keeps going until
/// ctrl-c or SIGTERM, which stop every service it started.
pub async fn main(listen: std::net::SocketAddr, modes: &[Mode], rate: u32) -> anyhow::Result<()> {
    eprintln!("starting a private PostgreSQL and nats-server…");
    let console = Handle::start().await?;
    let address = web::serve(console.clone(), listen).await?;
    if !modes.is_empty() {
        let names: Vec<&str> = modes.iter().map(|m| m.name()).collect();
        eprintln!("starting {}…", names.join(", "));
        console
            .send(Command::Run {
                modes: modes.to_vec(),
                rate,
            })
            .await
            .map_err(anyhow::Error::msg)?;
    }
    println!("order-events console: http://{address}/  (ctrl-c to stop everything)");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    eprintln!("stopping the services…");
    tokio::task::block_in_place(|| console.stop());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::{ConsoleMode, MODES};

    #[test]
    fn the_command_line_offers_the_modes_the_page_shows_by_their_names() {
        let names: Vec<String> = ConsoleMode::value_variants()
            .iter()
            .filter_map(ConsoleMode::to_possible_value)
            .map(|value| value.get_name().to_owned())
            .collect();
        assert_eq!(names, MODES.map(|mode| mode.name()));
    }
}
