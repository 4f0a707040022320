//! The service binaries as child processes.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

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

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("log lock").clone()
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
    admin_url: Option<String>,
}

/// How often a start looks for the address file: a start takes hundreds of
/// milliseconds, so this delays it little, and a missing file is cheap to
/// look for.
const ADDRESS_POLL: Duration = Duration::from_millis(5);

/// How long a service may take to listen: migrations, streams and consumers
/// come first.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What [`Service::start`] starts.
pub struct Launch<'a> {
    pub binary: &'a str,
    /// Names the process in the log.
    pub label: String,
    pub env: &'a [(String, String)],
    pub log: &'a Log,
    /// A directory where the service reports its addresses; the file names
    /// are the label's, so each start gets its own.
    pub dir: &'a Path,
    /// Whether to run an admin listener (on a free port) too.
    pub admin: bool,
}

impl Service {
    /// Starts a service on a free port (unless `env` sets `LISTEN_ADDR`), and
    /// waits until it reports its address through `LISTEN_ADDR_FILE`, which
    /// it does once migrations, streams and consumers are in place; fails
    /// with the last log lines if the process exits first.
    pub async fn start(launch: Launch<'_>) -> anyhow::Result<Self> {
        let Launch {
            binary,
            label,
            env,
            log,
            dir,
            admin,
        } = launch;
        let file_name = label.replace(['#', '/'], "-");
        let address_file = dir.join(format!("{file_name}.addr"));
        let admin_file = dir.join(format!("{file_name}.admin.addr"));
        let mut command = Command::new(binary_path(binary)?);
        command
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("LISTEN_ADDR_FILE", &address_file);
        if admin {
            command
                .env("ADMIN_LISTEN_ADDR", "127.0.0.1:0")
                .env("ADMIN_LISTEN_ADDR_FILE", &admin_file);
        }
        // `SERVICE_LOG` (default `info`) unless the test sets `RUST_LOG` itself.
        let mut child = command
            .env(
                "RUST_LOG",
                std::env::var("SERVICE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let forwarded = [
            forward(
                child.stdout.take().expect("piped"),
                label.clone(),
                log.clone(),
            ),
            forward(
                child.stderr.take().expect("piped"),
                label.clone(),
                log.clone(),
            ),
        ];

        let deadline = Instant::now() + START_TIMEOUT;
        let base_url = loop {
            if let Some(url) = read_address(&address_file)? {
                break url;
            }
            if let Some(status) = child.try_wait()? {
                // The error a refused start prints comes last, on stderr.
                let all_forwarded = futures::future::join_all(forwarded);
                let _ = tokio::time::timeout(Duration::from_secs(5), all_forwarded).await;
                bail!(
                    "{label} exited ({status}) before listening:\n{}",
                    log.tail(40).join("\n")
                )
            }
            if Instant::now() >= deadline {
                bail!(
                    "{label} reported no address within {START_TIMEOUT:?} (a binary \
                     built before LISTEN_ADDR_FILE existed never does: rebuild it):\n{}",
                    log.tail(40).join("\n")
                )
            }
            tokio::time::sleep(ADDRESS_POLL).await;
        };
        // The admin address is reported before the public one.
        let admin_url = if admin {
            let url = read_address(&admin_file)?.with_context(|| {
                format!("{label} reported its public address but not its admin one")
            })?;
            Some(url)
        } else {
            None
        };
        Ok(Self {
            label,
            child,
            base_url,
            admin_url,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.base_url
    }

    /// The admin listener's `http://127.0.0.1:PORT`, when started with one.
    pub fn admin_url(&self) -> &str {
        self.admin_url
            .as_deref()
            .expect("started with an admin listener")
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

    /// Whether the process has ended (a crash point, a kill).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
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

/// The address in `file` once the service wrote it: it writes the whole
/// line under another name and renames it, so a file that exists is complete.
fn read_address(file: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", file.display())),
    }
}

/// Copies a child's output into the log.
fn forward(
    stream: impl AsyncRead + Unpin + Send + 'static,
    label: String,
    log: Log,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(format!("[{label}] {line}"));
        }
    })
}
