//! Private PostgreSQL and NATS servers.
//!
//! Each server runs under a small shell watchdog that holds the read end of a
//! pipe from the test process: when the test process exits — normally, by
//! panic, or killed — the pipe closes and the watchdog stops the server and
//! removes its directory. Nothing outlives the tests.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Starts the server in the background and prints its pid. A line on stdin
/// stops it (a restart follows); the end of stdin — the test process is gone —
/// stops it and removes `$CLEANUP_DIR`. A server a test paused (SIGSTOP) is
/// let run again after the stop signal, or it would never act on it.
const WATCHDOG: &str = r#"
"$@" </dev/null >>"$SERVER_LOG" 2>&1 &
child=$!
echo "$child"
if read -r _; then cleanup=""; else cleanup="$CLEANUP_DIR"; fi
kill -"$STOP_SIGNAL" "$child" 2>/dev/null
kill -CONT "$child" 2>/dev/null
wait "$child"
if [ -n "$cleanup" ]; then rm -rf "$cleanup"; fi
"#;

/// A server process under the watchdog.
pub(crate) struct Supervised {
    watchdog: Child,
    pub(crate) pid: u32,
}

impl Supervised {
    pub(crate) fn spawn(
        run_as: Option<&str>,
        program: &Path,
        args: &[String],
        log: &Path,
        stop_signal: &str,
        cleanup_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut command = match run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "sh"]);
                c
            }
            None => Command::new("sh"),
        };
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(program)
            .args(args)
            .env("SERVER_LOG", log)
            .env("STOP_SIGNAL", stop_signal)
            .env(
                "CLEANUP_DIR",
                cleanup_dir.map(Path::as_os_str).unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // The shell reports a killed server ("Killed"); the test does not need to hear it.
            .stderr(Stdio::null());
        let mut watchdog = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut line = String::new();
        BufReader::new(watchdog.stdout.take().expect("stdout is piped")).read_line(&mut line)?;
        let pid = line
            .trim()
            .parse()
            .with_context(|| format!("the watchdog of {} printed {line:?}", program.display()))?;
        Ok(Self { watchdog, pid })
    }

    /// Stops the server the polite way and waits for it.
    pub(crate) fn stop(&mut self) {
        if let Some(mut stdin) = self.watchdog.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let _ = self.watchdog.wait();
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps the watchdog.
    pub(crate) fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        self.stop();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

fn wait_for_port(port: u16, what: &str, log: &Path) -> anyhow::Result<()> {
    wait_for_address(SocketAddr::from(([127, 0, 0, 1], port)), what, log)
}

pub(crate) fn wait_for_address(address: SocketAddr, what: &str, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{what} did not listen on {address} within 30s; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Servers refuse to run as root; as root we run them as this user.
const UNPRIVILEGED_USER: &str = "postgres";

pub(crate) fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A directory the server's user owns, removed when the tests end.
pub(crate) fn server_dir(prefix: &str, run_as: Option<&str>) -> anyhow::Result<PathBuf> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?.keep();
    if let Some(user) = run_as {
        let status = Command::new("chown")
            .args(["-R", user])
            .arg(&dir)
            .status()?;
        anyhow::ensure!(status.success(), "chown {user} {}", dir.display());
    }
    Ok(dir)
}

/// `$env_var` when set, else `name` in `extra_dirs`, on `PATH`, or in the
/// system directories a non-login root shell may leave off `PATH`.
pub(crate) fn find_program(
    name: &str,
    env_var: &str,
    extra_dirs: &[PathBuf],
) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let system_dirs = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")];
    let search = std::env::join_paths(extra_dirs.iter().chain(&path_dirs).chain(&system_dirs))?;
    which::which_in(name, Some(search), std::env::current_dir()?).with_context(|| {
        format!("{name} not found (set {env_var}, or run scripts/test.sh, which installs it)")
    })
}

/// `$PGBENCH_BIN`, or pgbench beside the newest PostgreSQL server.
pub fn pgbench_bin() -> anyhow::Result<PathBuf> {
    find_program("pgbench", "PGBENCH_BIN", &postgres_bin_dirs())
}

/// The newest PostgreSQL server binaries Debian's packages installed.
fn postgres_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.reverse();
    dirs
}

/// A private PostgreSQL cluster with `wal_level=logical`.
pub struct Postgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<&'static str>,
    durable: bool,
    server: Option<Supervised>,
}

impl Postgres {
    /// `initdb` in a fresh directory, then start. `fsync` is off: a killed
    /// process — PostgreSQL's own included — loses nothing from the page
    /// cache, and tests never kill the kernel. (`synchronous_commit` stays on:
    /// with it off, a crash of PostgreSQL loses acknowledged commits.)
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// Like [`Postgres::start`]; `durable` keeps `fsync` and synchronous
    /// commit on, as a benchmark must.
    pub fn start_with(durable: bool) -> anyhow::Result<Self> {
        let run_as = running_as_root().then_some(UNPRIVILEGED_USER);
        let bin = find_program("postgres", "POSTGRES_BIN", &postgres_bin_dirs())?;
        let initdb = bin.with_file_name("initdb");
        let dir = server_dir("order-events-pg-", run_as)?;
        let mut command = match run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&initdb);
                c
            }
            None => Command::new(&initdb),
        };
        let output = command
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .with_context(|| format!("running {}", initdb.display()))?;
        anyhow::ensure!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut pg = Self {
            port: free_port(),
            dir,
            bin,
            run_as,
            durable,
            server: None,
        };
        pg.launch()?;
        Ok(pg)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let data = self.dir.join("data");
        // Every test in CDC mode leaves its slots behind: room for the suite.
        let mut settings = vec![
            "listen_addresses=127.0.0.1",
            "wal_level=logical",
            "max_wal_senders=64",
            "max_replication_slots=64",
            "max_connections=1000",
            "shared_buffers=128MB",
            "max_slot_wal_keep_size=1GB",
        ];
        if !self.durable {
            settings.extend(["fsync=off", "full_page_writes=off"]);
        }
        let mut args = vec![
            "-D".to_owned(),
            data.display().to_string(),
            "-p".to_owned(),
            self.port.to_string(),
            "-k".to_owned(),
            self.dir.display().to_string(),
        ];
        for setting in settings {
            args.push("-c".to_owned());
            args.push(setting.to_owned());
        }
        let log = self.dir.join("postgres.log");
        self.server = Some(Supervised::spawn(
            self.run_as,
            &self.bin,
            &args,
            &log,
            "INT",
            Some(&self.dir),
        )?);
        wait_for_port(self.port, "PostgreSQL", &log)
    }

    /// The postmaster's pid, while the server runs: the parent of every
    /// backend and background worker.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|server| server.pid)
    }

    /// A URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Fast shutdown, then start again on the same port and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch()
    }

    /// Starts a stopped server again, on the same port and data.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.server.is_none() {
            self.launch()?;
        }
        Ok(())
    }

    /// Fast shutdown (clients are disconnected).
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
    }

    /// An immediate shutdown (SIGQUIT: every backend ends at once, no
    /// checkpoint), the way a crash would end it, then a start with crash
    /// recovery. (SIGKILL of the postmaster would orphan its backends.)
    pub fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut server) = self.server.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &server.pid.to_string()])
                .status();
            server.stop();
        }
        self.launch()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `$NATS_SERVER_BIN`, the build `scripts/lib.sh` put in `.tools/`, or the
/// one on `PATH`.
pub fn nats_server_bin() -> anyhow::Result<PathBuf> {
    let tools = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.tools/nats/bin"));
    find_program("nats-server", "NATS_SERVER_BIN", &[tools])
}

/// Whether `bin` is nats-server 2.10 or newer, which knows `sync_interval`.
pub fn syncs_always(bin: &Path) -> bool {
    nats_server_version(bin).is_some_and(|version| version >= (2, 10))
}

/// The major and minor version of the nats-server `bin`, if it says.
pub fn nats_server_version(bin: &Path) -> Option<(u32, u32)> {
    let version = Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let numbers: Vec<u32> = version
        .trim()
        .rsplit('v')
        .next()
        .unwrap_or_default()
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers.as_slice() {
        [major, minor, ..] => Some((*major, *minor)),
        _ => None,
    }
}

/// A private `nats-server` with JetStream.
pub struct Nats {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    server: Option<Supervised>,
}

impl Nats {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_program(nats_server_bin()?)
    }

    /// The nats-server the harness uses (`$NATS_SERVER_BIN`, `.tools/`, `PATH`).
    pub fn program() -> anyhow::Result<PathBuf> {
        nats_server_bin()
    }

    /// A private server run by the nats-server binary `bin`.
    pub fn start_program(bin: PathBuf) -> anyhow::Result<Self> {
        let dir = server_dir("order-events-nats-", None)?;
        let mut nats = Self {
            port: free_port(),
            dir,
            bin,
            server: None,
        };
        nats.launch()?;
        Ok(nats)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let store = self.store_dir().display().to_string();
        let mut args = vec![
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
        ];
        if syncs_always(&self.bin) {
            // Flush to disk before every acknowledgement (2.10+).
            let config = self.dir.join("nats.conf");
            std::fs::write(
                &config,
                format!("jetstream {{ store_dir: {store:?}, sync_interval: always }}\n"),
            )?;
            args.extend(["-c".to_owned(), config.display().to_string()]);
        } else {
            args.extend(["-js".to_owned(), "-sd".to_owned(), store]);
        }
        let log = self.dir.join("nats.log");
        self.server = Some(Supervised::spawn(
            None,
            &self.bin,
            &args,
            &log,
            "TERM",
            Some(&self.dir),
        )?);
        wait_for_port(self.port, "nats-server", &log)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|server| server.pid)
    }

    /// The directory JetStream keeps its streams in (`store_dir`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("jetstream")
    }

    /// Stops and starts again on the same port and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch()
    }

    /// Starts a stopped server again on the same port and store.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.server.is_none() {
            self.launch()?;
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The servers all tests of one process share; each test isolates itself with
/// its own databases and stream prefix.
pub struct Shared {
    pub postgres_admin_url: String,
    pub nats_url: String,
    _postgres: Option<Postgres>,
    _nats: Option<Nats>,
}

/// Starts the shared servers on first use (or takes `E2E_DATABASE_URL` and
/// `E2E_NATS_URL`). They are stopped when the test process exits.
pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (postgres_admin_url, postgres) = match std::env::var("E2E_DATABASE_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                let pg = Postgres::start().expect("starting a private PostgreSQL");
                (pg.url("postgres"), Some(pg))
            }
        };
        let (nats_url, nats) = match std::env::var("E2E_NATS_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                let nats = Nats::start().expect("starting a private nats-server");
                (nats.url(), Some(nats))
            }
        };
        Shared {
            postgres_admin_url,
            nats_url,
            _postgres: postgres,
            _nats: nats,
        }
    })
}
