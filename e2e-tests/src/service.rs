//! The service binaries as child processes.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// Output of every process a test started, in order, for the failure report.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("{line}");
        }
        self.0.lock().expect("log lock").push(line);
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.0.lock().expect("log lock");
        lines[lines.len().saturating_sub(n)..].to_vec()
    }
}

/// Where `cargo build` put the workspace's binaries: beside the running
/// binary (the benchmark) or beside its `deps/` directory (a test), unless
/// `ORDER_SERVICE_BIN` / `REWARDS_SERVICE_BIN` say otherwise.
pub fn binary_path(name: &str) -> anyhow::Result<PathBuf> {
    let var = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("locating the target directory")?;
    let dir = if dir.ends_with("deps") {
        dir.parent().context("locating the target directory")?
    } else {
        dir
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build the services first with \
             `cargo build --workspace --all-features --bins` (add --release for the benchmark), \
             or set {var}",
            path.display()
        );
    }
    Ok(path)
}

/// A running service process. Dropping it kills the process.
pub struct Service {
    label: String,
    child: Child,
    base_url: String,
}

impl Service {
    /// Starts `binary` on a free port with `env`, and waits until it logs the
    /// address it listens on (it does so once migrations, streams and
    /// consumers are in place).
    pub async fn start(
        binary: &str,
        label: String,
        env: &[(String, String)],
        log: &Log,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(binary_path(binary)?)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("SERVICE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let (address_tx, address_rx) = oneshot::channel();
        forward(
            child.stdout.take().expect("piped"),
            label.clone(),
            log.clone(),
            Some(address_tx),
        );
        let stderr_forwarded = forward(
            child.stderr.take().expect("piped"),
            label.clone(),
            log.clone(),
            None,
        );

        let started = tokio::time::timeout(Duration::from_secs(60), address_rx).await;
        let base_url = match started {
            Ok(Ok(address)) => address,
            Ok(Err(_)) => {
                let status = child.wait().await?;
                // The error a refused start prints comes last, on stderr.
                let _ = tokio::time::timeout(Duration::from_secs(5), stderr_forwarded).await;
                bail!(
                    "{label} exited ({status}) before listening:\n{}",
                    log.tail(40).join("\n")
                )
            }
            Err(_) => bail!(
                "{label} did not listen within 60s:\n{}",
                log.tail(40).join("\n")
            ),
        };
        Ok(Self {
            label,
            child,
            base_url,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.base_url
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the process to end on its own (a crash point), at most `timeout`.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("waiting for a child"),
            Err(_) => panic!("{} was still running after {timeout:?}", self.label),
        }
    }

    /// Waits for a crash point to end the process, and asserts it did not
    /// exit cleanly.
    pub async fn assert_crashed(&mut self) {
        let status = self.wait_for_exit(Duration::from_secs(20)).await;
        assert!(
            !status.success(),
            "{} exited cleanly ({status})",
            self.label
        );
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, and waits for a graceful exit.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        self.wait_for_exit(timeout).await
    }
}

/// Copies a child's output into the log; the first `listening on http://…`
/// line of stdout reports the address.
fn forward(
    stream: impl AsyncRead + Unpin + Send + 'static,
    label: String,
    log: Log,
    mut address: Option<oneshot::Sender<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some(tx) = address.take()
            {
                let url = rest.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(url.to_owned());
            }
            log.push(format!("[{label}] {line}"));
        }
    })
}
