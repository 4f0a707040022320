//! The console in a real browser: headless Chromium, driven through
//! chromedriver (WebDriver). It starts the outbox and the dual-write control
//! side by side, lets orders flow, pauses, arms the crash point of both
//! order-services and places one followed order in each; then reads what
//! the page shows: the control lost exactly that order (the audit counts
//! it), the outbox credited every order it placed. A screenshot of the page
//! is saved as `target/console.png` (the picture in `docs/observability.md` is one).

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use harness::eventually;
use harness::servers::free_port;
use hyper_util::client::legacy::connect::HttpConnector;
use order_events_tools::console::{Handle, StopOnDrop, web};

/// Debian's Chromium and its driver, when installed.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = which::which("chromium").ok()?;
    let driver = which::which("chromedriver").ok()?;
    Some((chromium, driver))
}

async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn number(client: &Client, mode: &str, field: &str) -> Option<i64> {
    text(client, &format!("#lane-{mode} [data-field=\"{field}\"]"))
        .await
        .trim()
        .parse()
        .ok()
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_console_the_control_loses_the_crashed_order_and_the_outbox_converges() {
    let console = Handle::start().await.unwrap();
    let _stop = StopOnDrop(console.clone());
    let address = web::serve(console, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    // A button for a mode that does not exist, or that is not running, is
    // refused with a JSON error, and nothing starts.
    let http = reqwest::Client::new();
    for (path, status, code) in [
        ("/api/lanes/nope/crash", 404, "unknown_mode"),
        ("/api/lanes/outbox/crash", 409, "refused"),
        ("/api/broker/explode", 404, "not_found"),
    ] {
        let response = http
            .post(format!("http://{address}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }

    let Some((chromium, chromedriver)) = browser() else {
        eprintln!(
            "skipped the browser: chromium and chromedriver are not installed (Debian: \
             chromium, chromium-driver; scripts/test.sh installs them as root)"
        );
        return;
    };
    let port = free_port();
    let _driver = tokio::process::Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting chromedriver");
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"],
        }
    });
    let capabilities = match capabilities {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    };
    let client = eventually(
        "chromedriver to take a session",
        Duration::from_secs(30),
        || {
            let capabilities = capabilities.clone();
            async move {
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await
                    .ok()
            }
        },
    )
    .await;
    client.goto(&format!("http://{address}/")).await.unwrap();

    // The outbox and the control, side by side.
    click(&client, "#mode-cdc").await;
    click(&client, "#mode-self-read").await;
    click(&client, "#run").await;
    let busy = Duration::from_secs(120);
    eventually("both lanes crediting", busy, || async {
        let outbox = number(&client, "outbox", "credited").await?;
        let control = number(&client, "dual-write", "credited").await?;
        (outbox >= 20 && control >= 20).then_some(())
    })
    .await;
    click(&client, "#pause").await;
    // Once the page shows the load paused, every order sent since is in
    // flight until it is answered and credited.
    eventually("the load paused", busy, || async {
        text(&client, "#clock")
            .await
            .contains(" 0 orders/s")
            .then_some(())
    })
    .await;
    for mode in ["outbox", "dual-write"] {
        eventually(&format!("{mode} to settle"), busy, || async {
            (number(&client, mode, "in_flight").await? == 0).then_some(())
        })
        .await;
    }
    let before: Vec<i64> = futures::future::join_all(
        ["outbox", "dual-write"]
            .map(|mode| async { number(&client, mode, "placed").await.unwrap() }),
    )
    .await;

    // One order into the crash point, in each lane.
    for mode in ["outbox", "dual-write"] {
        click(
            &client,
            &format!("#lane-{mode} button[data-action=\"crash\"]"),
        )
        .await;
        click(
            &client,
            &format!("#lane-{mode} button[data-action=\"follow\"]"),
        )
        .await;
    }
    eventually("the control's loss counted by the audit", busy, || async {
        let audit = client
            .find(Locator::Css("#lane-dual-write [data-field=\"audit\"]"))
            .await
            .ok()?
            .attr("data-without-credit")
            .await
            .ok()??;
        (audit == "1").then_some(())
    })
    .await;
    eventually("the outbox's followed order credited", busy, || async {
        let followed = text(&client, "#lane-outbox [data-field=\"followed\"]").await;
        followed.contains("credited 12 points").then_some(())
    })
    .await;

    // What the page says, against the counts before the crash.
    let outbox_placed = number(&client, "outbox", "placed").await.unwrap();
    assert_eq!(outbox_placed, before[0] + 1);
    assert_eq!(
        number(&client, "outbox", "credited").await,
        Some(outbox_placed)
    );
    assert_eq!(
        number(&client, "outbox", "stored").await,
        Some(outbox_placed)
    );
    let control_placed = number(&client, "dual-write", "placed").await.unwrap();
    assert_eq!(control_placed, before[1] + 1);
    assert_eq!(
        number(&client, "dual-write", "stored").await,
        Some(control_placed)
    );
    assert_eq!(
        number(&client, "dual-write", "credited").await,
        Some(control_placed - 1)
    );
    let verdict = text(&client, "#lane-dual-write [data-field=\"audit\"]").await;
    assert!(
        verdict.contains("1 order stored over 5 s ago without a credit"),
        "{verdict}"
    );
    let verdict = text(&client, "#lane-outbox [data-field=\"audit\"]").await;
    assert_eq!(verdict, "audit: every order credited exactly once");
    let followed = text(&client, "#lane-dual-write [data-field=\"followed\"]").await;
    assert!(followed.contains("stored; not credited"), "{followed}");

    let screenshot = client.screenshot().await.unwrap();
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console.png");
    std::fs::write(&target, screenshot).unwrap();
    eprintln!("screenshot: {}", target.display());
    client.close().await.unwrap();
}
