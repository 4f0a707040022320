//! A three-node NATS JetStream cluster whose nodes a test can kill, pause,
//! restart and cut off.
//!
//! As root with `ip` (iproute2), each node runs in a network namespace of
//! its own, joined by a veth pair to a bridge in the test's namespace, with
//! an address of its own (`10.213.N.1` to `.3`; the bridge is `.254`).
//! Setting a node's end of its link down cuts it off from the other nodes
//! and from every client, as a partition would, while the process runs on.
//! Elsewhere the nodes share the loopback interface on ports of their own,
//! and cutting is not available ([`NatsCluster::can_cut`] says why).
//!
//! Nothing outlives the tests: the servers run under the watchdog of
//! [`crate::servers`], and the namespaces and the bridge under a watchdog of
//! their own that removes them when the test process ends, however it ends.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream;

use crate::servers::{
    Supervised, find_program, free_port, nats_server_bin, running_as_root, server_dir,
    syncs_always, wait_for_address,
};
use crate::wait::{CONVERGE, eventually};

/// Nodes in the cluster: a majority survives the loss of any one.
pub const NODES: usize = 3;

/// Tests with a cluster take turns, two at a time: each is some fifteen
/// processes, mostly waiting (on elections, paced clients, a fault's
/// duration), beside the rest of the suite.
pub async fn take_turn() -> tokio::sync::SemaphorePermit<'static> {
    static TURN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    TURN.acquire().await.expect("never closed")
}

/// A running cluster of [`NODES`] nats-servers with JetStream.
pub struct NatsCluster {
    nodes: Vec<Node>,
    network: Result<Network, String>,
    bin: PathBuf,
    dir: PathBuf,
    http: reqwest::Client,
}

struct Node {
    /// `n1`, `n2`, `n3`: the `server_name` streams report their leader by.
    name: String,
    ip: IpAddr,
    client_port: u16,
    route_port: u16,
    monitor_port: u16,
    /// With namespaces: the node's namespace and its end of the link.
    namespace: Option<(String, String)>,
    server: Option<Supervised>,
    paused: bool,
}

impl Node {
    fn client(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.client_port)
    }
}

impl NatsCluster {
    /// Starts the cluster and waits until every node reports JetStream
    /// healthy. Uses namespaces when it can, else loopback ports.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = nats_server_bin()?;
        anyhow::ensure!(
            syncs_always(&bin),
            "{} is older than 2.10; the cluster needs `sync_interval` (run scripts/test.sh, which installs 2.15 in .tools/)",
            bin.display()
        );
        let dir = server_dir("order-events-cluster-", None)?;
        let network = Network::create();
        let nodes = (1..=NODES)
            .map(|i| {
                let (ip, namespace) = match &network {
                    Ok(network) => (network.node_ip(i), Some(network.node_names(i))),
                    Err(_) => (IpAddr::V4(Ipv4Addr::LOCALHOST), None),
                };
                // In a namespace of its own every node may use the usual ports.
                let port = |usual| {
                    if namespace.is_some() {
                        usual
                    } else {
                        free_port()
                    }
                };
                Node {
                    name: format!("n{i}"),
                    ip,
                    client_port: port(4222),
                    route_port: port(6222),
                    monitor_port: port(8222),
                    namespace,
                    server: None,
                    paused: false,
                }
            })
            .collect();
        let mut cluster = Self {
            nodes,
            network,
            bin,
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        for i in 0..NODES {
            cluster.launch(i)?;
        }
        for i in 0..NODES {
            cluster.wait_healthy(i).await;
        }
        Ok(cluster)
    }

    /// Whether [`cut`](Self::cut) works here, or why it does not.
    pub fn can_cut(&self) -> Result<(), &str> {
        self.network.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Every node's client URL, comma-separated, as `NATS_URL` takes them.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://{}", node.client()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A JetStream context on the cluster (any node).
    pub async fn jetstream(&self) -> jetstream::Context {
        let servers: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .map(|node| {
                format!("nats://{}", node.client())
                    .parse()
                    .expect("a server address")
            })
            .collect();
        let client = async_nats::ConnectOptions::new()
            .connect(servers)
            .await
            .expect("connecting to the cluster");
        jetstream::new(client)
    }

    fn launch(&mut self, i: usize) -> anyhow::Result<()> {
        let routes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, other)| format!("\"nats://{}:{}\"", other.ip, other.route_port))
            .collect::<Vec<_>>()
            .join(", ");
        let node = &self.nodes[i];
        let store = self.dir.join(&node.name);
        let config = self.dir.join(format!("{}.conf", node.name));
        std::fs::write(
            &config,
            format!(
                "server_name: {name}\n\
                 listen: \"{ip}:{client}\"\n\
                 http: \"{ip}:{monitor}\"\n\
                 jetstream {{ store_dir: {store:?}, sync_interval: always }}\n\
                 cluster {{\n  name: order-events\n  listen: \"{ip}:{route}\"\n  routes: [{routes}]\n}}\n",
                name = node.name,
                ip = node.ip,
                client = node.client_port,
                monitor = node.monitor_port,
                route = node.route_port,
                store = store.display().to_string(),
            ),
        )?;
        let server_args = vec!["-c".to_owned(), config.display().to_string()];
        let (program, args) = match &node.namespace {
            Some((namespace, _)) => {
                let mut args = vec!["netns".to_owned(), "exec".to_owned(), namespace.clone()];
                args.push(self.bin.display().to_string());
                args.extend(server_args);
                (ip_bin()?, args)
            }
            None => (self.bin.clone(), server_args),
        };
        let log = self.dir.join(format!("{}.log", node.name));
        let server = Supervised::spawn(None, &program, &args, &log, "TERM", None)?;
        let address = node.client();
        self.nodes[i].server = Some(server);
        self.nodes[i].paused = false;
        wait_for_address(address, "a cluster node", &log)
    }

    /// Waits until node `i` says JetStream is current (`/healthz`).
    pub async fn wait_healthy(&self, i: usize) {
        let node = &self.nodes[i];
        let url = format!("http://{}:{}/healthz", node.ip, node.monitor_port);
        eventually(
            &format!("node {} to be healthy", node.name),
            CONVERGE,
            || {
                let request = self.http.get(&url).send();
                async move { request.await.ok()?.status().is_success().then_some(()) }
            },
        )
        .await;
    }

    /// SIGKILL of node `i`, as a crash would; its store is kept.
    pub fn kill(&mut self, i: usize) {
        self.resume(i);
        if let Some(mut server) = self.nodes[i].server.take() {
            server.kill();
        }
    }

    /// A clean shutdown of node `i`; its store is kept.
    pub fn stop(&mut self, i: usize) {
        self.resume(i);
        if let Some(mut server) = self.nodes[i].server.take() {
            server.stop();
        }
    }

    /// Starts a stopped or killed node again, on its address and store, and
    /// waits until it has caught up.
    pub async fn start_again(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].server.is_none() {
            self.launch(i)?;
        }
        self.wait_healthy(i).await;
        Ok(())
    }

    /// Stops node `i` (SIGSTOP): it keeps its connections and answers
    /// nothing, as a node stalled by its disk or a long pause would.
    pub fn pause(&mut self, i: usize) {
        if let Some(server) = &self.nodes[i].server {
            signal(server.pid, "STOP");
            self.nodes[i].paused = true;
        }
    }

    /// Lets a paused node run again (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        if self.nodes[i].paused
            && let Some(server) = &self.nodes[i].server
        {
            signal(server.pid, "CONT");
            self.nodes[i].paused = false;
        }
    }

    /// Cuts node `i` off from the other nodes and from every client: its
    /// link to the bridge goes down; connections stay open, and traffic to
    /// and from it is lost until [`heal`](Self::heal).
    pub fn cut(&self, i: usize) -> anyhow::Result<()> {
        self.set_link(i, "down")
    }

    /// Brings node `i`'s link up again.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        self.set_link(i, "up")
    }

    fn set_link(&self, i: usize, state: &str) -> anyhow::Result<()> {
        if let Err(why) = &self.network {
            bail!("cannot cut a node off: {why}");
        }
        let (_, link) = self.nodes[i]
            .namespace
            .as_ref()
            .expect("nodes have namespaces when the network is up");
        run_ip(&["link", "set", link, state])
    }

    /// The node that leads `stream` now (waiting until it has a leader).
    pub async fn leader_of(&self, stream: &str) -> usize {
        let js = self.jetstream().await;
        eventually(
            &format!("stream {stream} to have a leader"),
            CONVERGE,
            || {
                let js = js.clone();
                async move {
                    let mut stream = js.get_stream(stream).await.ok()?;
                    let info = stream.info().await.ok()?;
                    let leader = info.cluster.as_ref()?.leader.clone()?;
                    self.nodes.iter().position(|node| node.name == leader)
                }
            },
        )
        .await
    }

    /// Makes node `i` the leader of `stream` (a step-down with a preferred
    /// successor) and waits until it is.
    pub async fn make_leader(&self, stream: &str, i: usize) {
        let js = self.jetstream().await;
        let wanted = &self.nodes[i].name;
        eventually(&format!("{wanted} to lead {stream}"), CONVERGE, || {
            let js = js.clone();
            async move {
                if self.leader_of(stream).await == i {
                    return Some(());
                }
                let request = serde_json::json!({ "placement": { "preferred": wanted } });
                let _: Result<serde_json::Value, _> = js
                    .request(format!("STREAM.LEADER.STEPDOWN.{stream}"), &request)
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                None
            }
        })
        .await;
    }

    /// Whether this cluster runs its nodes in network namespaces.
    pub fn isolated(&self) -> bool {
        self.network.is_ok()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..NODES {
            self.stop(i);
        }
        if let Ok(network) = &mut self.network {
            network.remove();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status();
}

fn ip_bin() -> anyhow::Result<PathBuf> {
    find_program("ip", "IP_BIN", &[])
}

fn run_ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(ip_bin()?)
        .args(args)
        .output()
        .context("running ip")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The bridge, the namespaces and the links of one cluster, and the
/// watchdog that removes them.
struct Network {
    /// `N` of `oeNbr` and of `10.213.N.0/24`.
    index: u8,
    cleanup: Option<Child>,
}

impl Network {
    /// Claims a free bridge name (creating a link is atomic, so two test
    /// processes never share one) and builds the namespaces; an error says
    /// why namespaces are not available here.
    fn create() -> Result<Self, String> {
        if !running_as_root() {
            return Err("network namespaces need root".to_owned());
        }
        if ip_bin().is_err() {
            return Err("`ip` (iproute2) is not installed".to_owned());
        }
        let start = std::process::id() % 200;
        let index = (0..200)
            .map(|k| u8::try_from((start + k) % 200).expect("below 200"))
            .find(|n| run_ip(&["link", "add", &format!("oe{n}br"), "type", "bridge"]).is_ok())
            .ok_or_else(|| "no free bridge name (oe0br to oe199br all taken)".to_owned())?;
        let mut network = Self {
            index,
            cleanup: None,
        };
        network.cleanup = Some(network.watchdog().map_err(|e| format!("{e:#}"))?);
        network
            .build()
            .map_err(|e| format!("building the namespaces: {e:#}"))?;
        Ok(network)
    }

    fn bridge(&self) -> String {
        format!("oe{}br", self.index)
    }

    fn node_ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(
            10,
            213,
            self.index,
            u8::try_from(i).expect("a node"),
        ))
    }

    /// The namespace of node `i` and its end of the link on the bridge.
    fn node_names(&self, i: usize) -> (String, String) {
        (
            format!("oe{}n{i}", self.index),
            format!("oe{}h{i}", self.index),
        )
    }

    fn build(&self) -> anyhow::Result<()> {
        let bridge = self.bridge();
        // Whoever held this index before is gone (its bridge was free), but
        // what it left may not be: a namespace outlives its name while a
        // process is inside, and with it the link's end on this side.
        for i in 1..=NODES {
            let (namespace, host_end) = self.node_names(i);
            let _ = run_ip(&["netns", "del", &namespace]);
            let _ = run_ip(&["link", "del", &host_end]);
        }
        run_ip(&[
            "addr",
            "add",
            &format!("10.213.{}.254/24", self.index),
            "dev",
            &bridge,
        ])?;
        run_ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=NODES {
            let (namespace, host_end) = self.node_names(i);
            let node_end = format!("oe{}p{i}", self.index);
            let address = format!("{}/24", self.node_ip(i));
            run_ip(&["netns", "add", &namespace])?;
            run_ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &node_end,
            ])?;
            run_ip(&["link", "set", &node_end, "netns", &namespace])?;
            run_ip(&["-n", &namespace, "addr", "add", &address, "dev", &node_end])?;
            run_ip(&["-n", &namespace, "link", "set", &node_end, "up"])?;
            run_ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            run_ip(&["link", "set", &host_end, "master", &bridge])?;
            run_ip(&["link", "set", &host_end, "up"])?;
        }
        Ok(())
    }

    /// A shell that waits for a line or the end of its stdin (the test
    /// process is gone), then deletes the namespaces (and with them the
    /// links) and the bridge.
    fn watchdog(&self) -> anyhow::Result<Child> {
        let ip = ip_bin()?;
        let namespaces: Vec<String> = (1..=NODES).map(|i| self.node_names(i).0).collect();
        let script = format!(
            "read -r _; for ns in {}; do \"$IP\" netns del \"$ns\" 2>/dev/null; done; \
             \"$IP\" link del {} 2>/dev/null; exit 0",
            namespaces.join(" "),
            self.bridge()
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("IP", Path::new(&ip))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the network's watchdog")
    }

    fn remove(&mut self) {
        if let Some(mut cleanup) = self.cleanup.take() {
            if let Some(mut stdin) = cleanup.stdin.take() {
                let _ = stdin.write_all(b"remove\n");
            }
            let _ = cleanup.wait();
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove();
    }
}
