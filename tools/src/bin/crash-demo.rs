//! One order per mode into the crash that tells the patterns from the
//! control: order-service dies after the order's COMMIT and before any
//! publish (self-read: after the PubAck, before the answer), is started
//! again, and the client retries with its key. Run by `scripts/demo.sh
//! --crash`, which builds what it needs first:
//!
//! ```text
//! cargo build --workspace --all-features --bins
//! cargo run -p order-events-tools --bin crash-demo
//! ```

use order_events_tools::crash_demo;

#[tokio::main]
async fn main() {
    eprintln!("placing one order per mode into a crash of order-service…");
    let started = std::time::Instant::now();
    let outcomes = crash_demo::run().await;
    println!("{}", crash_demo::table(&outcomes));
    let modes = |keep: fn(&crash_demo::Outcome) -> bool| {
        let names: Vec<&str> = outcomes
            .iter()
            .filter(|o| keep(o))
            .map(|o| o.mode.name())
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    println!(
        "credited: {}; lost: {} ({:.0} s)",
        modes(|o| o.credited == 1),
        modes(|o| o.credited == 0),
        started.elapsed().as_secs_f64()
    );
}
