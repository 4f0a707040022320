//! The compose files, the Dockerfile and nginx's configuration, read without
//! a Docker engine: every variable compose sets for a service is one that
//! service reads, and a new user's first `docker compose up` has nothing to
//! trip on (a tag shared between builds, a project shared between files,
//! ports open to the network, a health check passed too early, a broker
//! other than the tested one, a load balancer that loses recreated
//! instances, no operator CLI in the image).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::{Mapping, Value};

const FILES: [&str; 2] = ["docker-compose.yml", "docker-compose.cluster.yml"];

/// What the services read outside their arguments (whose names `--help`
/// prints): the log filter and format, the trace exporter's settings, the
/// crash points, the files the listeners write their addresses to, and the
/// replication connection's password.
const READ_OUTSIDE_ARGUMENTS: [&str; 9] = [
    "RUST_LOG",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "FAILPOINTS",
    "LISTEN_ADDR_FILE",
    "ADMIN_LISTEN_ADDR_FILE",
    "PGPASSWORD",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_text(file: &str) -> String {
    std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("reading {file}: {e}"))
}

/// The file with its anchors and `<<` merges resolved, as Compose sees it.
fn compose(file: &str) -> Value {
    let mut value: Value = serde_norway::from_str(&read_text(file))
        .unwrap_or_else(|e| panic!("{file} is not YAML: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    value
}

fn services(file: &str) -> Vec<(String, Mapping)> {
    let compose = compose(file);
    let services = compose["services"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{file} has no services"));
    services
        .iter()
        .map(|(name, service)| {
            let name = name.as_str().expect("a service name").to_owned();
            let service = service
                .as_mapping()
                .unwrap_or_else(|| panic!("{file}: {name} is not a mapping"))
                .clone();
            (name, service)
        })
        .collect()
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_sequence)
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `environment:` as a mapping or as a list of `NAME=value`.
fn environment_names(service: &Mapping) -> Vec<String> {
    match service.get("environment") {
        None => Vec::new(),
        Some(Value::Mapping(map)) => map
            .keys()
            .map(|key| key.as_str().expect("a variable name").to_owned())
            .collect(),
        Some(Value::Sequence(_)) => strings(service.get("environment"))
            .into_iter()
            .map(|item| item.split('=').next().unwrap_or_default().to_owned())
            .collect(),
        Some(other) => panic!("environment is neither a mapping nor a list: {other:?}"),
    }
}

/// The variables a service binary reads: those `--help` names
/// (`[env: NAME=...]`) and those read outside its arguments.
fn variables_read_by(binary: &str) -> BTreeSet<String> {
    let path = harness::service::binary_path(binary).unwrap_or_else(|e| panic!("{e:#}"));
    let output = Command::new(&path)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("running {} --help: {e}", path.display()));
    assert!(output.status.success(), "{binary} --help failed");
    let help = String::from_utf8_lossy(&output.stdout);
    let mut names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect();
    assert!(
        names.contains("DATABASE_URL"),
        "{binary} --help names no DATABASE_URL: {help}"
    );
    names.extend(READ_OUTSIDE_ARGUMENTS.iter().map(|name| (*name).to_owned()));
    names
}

#[test]
fn every_variable_compose_sets_for_a_service_is_one_the_service_reads() {
    let mut checked = 0;
    for file in FILES {
        for (name, service) in services(file) {
            let command = strings(service.get("command"));
            let Some(binary) = command
                .first()
                .filter(|binary| ["order-service", "rewards-service"].contains(&binary.as_str()))
            else {
                continue;
            };
            let read = variables_read_by(binary);
            let unread: Vec<String> = environment_names(&service)
                .into_iter()
                .filter(|variable| !read.contains(variable))
                .collect();
            assert!(
                unread.is_empty(),
                "{file}: {name} sets {unread:?}, which {binary} does not read"
            );
            checked += 1;
        }
    }
    // Two services in docker-compose.yml, four instances in the cluster file.
    assert_eq!(checked, 6);
}

#[test]
fn no_service_that_is_built_shares_an_image_tag() {
    for file in FILES {
        for (name, service) in services(file) {
            if service.contains_key("build") {
                assert!(
                    !service.contains_key("image"),
                    "{file}: {name} builds and names an image: several builds exported \
                     under one tag can fail with \"already exists\""
                );
            }
        }
    }
}

#[test]
fn each_compose_file_is_a_project_of_its_own() {
    let names: BTreeSet<String> = FILES
        .iter()
        .map(|file| {
            compose(file)["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{file} has no top-level `name:`"))
                .to_owned()
        })
        .collect();
    assert_eq!(
        names.len(),
        FILES.len(),
        "the compose files share a project name: {names:?}"
    );
}

#[test]
fn every_published_port_listens_on_loopback_only() {
    let mut published = 0;
    for file in FILES {
        for (name, service) in services(file) {
            for port in strings(service.get("ports")) {
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "{file}: {name} publishes {port:?} on every interface"
                );
                published += 1;
            }
        }
    }
    // 8081, 8082 and Jaeger's three in docker-compose.yml; nginx's two in the cluster.
    assert_eq!(published, 7);
}

#[test]
fn postgres_is_healthy_only_once_it_takes_connections_over_tcp() {
    for file in FILES {
        let (_, postgres) = services(file)
            .into_iter()
            .find(|(name, _)| name == "postgres")
            .unwrap_or_else(|| panic!("{file} has no postgres"));
        let test = strings(postgres.get("healthcheck").and_then(|h| h.get("test")));
        assert!(
            test.windows(2)
                .any(|pair| pair[0] == "-h" && pair[1] == "127.0.0.1"),
            "{file}: the health check {test:?} passes on the first start's socket-only server"
        );
    }
}

#[test]
fn compose_runs_the_nats_server_version_the_suite_runs() {
    let bin = harness::servers::nats_server_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let output = Command::new(&bin).arg("--version").output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    let version = said
        .trim()
        .rsplit('v')
        .next()
        .unwrap_or_else(|| panic!("no version in {said:?}"));
    for file in FILES {
        for (name, service) in services(file) {
            let image = service.get("image").and_then(Value::as_str).unwrap_or("");
            if let Some(tag) = image.strip_prefix("nats:") {
                let tagged = tag.split('-').next().unwrap_or_default();
                assert_eq!(
                    tagged, version,
                    "{file}: {name} runs {image}, the suite runs nats-server {version}"
                );
            }
        }
    }
}

#[test]
fn tracing_runs_jaeger_2() {
    let (_, jaeger) = services("docker-compose.yml")
        .into_iter()
        .find(|(name, _)| name == "jaeger")
        .expect("docker-compose.yml has no jaeger");
    let image = jaeger["image"].as_str().unwrap();
    assert!(
        image.starts_with("jaegertracing/jaeger:2."),
        "{image} is not Jaeger 2 (the 1.x all-in-one is end-of-life)"
    );
}

#[test]
fn the_image_carries_the_operator_cli() {
    let dockerfile = read_text("Dockerfile");
    assert!(
        dockerfile.contains("-p order-events-cli"),
        "the Dockerfile does not build order-events-cli"
    );
    let copied = dockerfile.lines().any(|line| {
        line.starts_with("COPY --from=build")
            && line.contains("/out/order-events ")
            && line.ends_with("/usr/local/bin/")
    });
    assert!(
        copied,
        "the Dockerfile's last stage does not copy order-events"
    );
}

/// nginx ≥ 1.27.3 re-resolves a `server NAME resolve` of an upstream with a
/// `zone`; without it, a recreated instance's new address is never used.
#[test]
fn the_load_balancer_resolves_recreated_instances_while_it_runs() {
    let conf = read_text("docker/nginx-cluster.conf");
    let directives: Vec<&str> = conf
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .collect();
    assert!(
        directives.iter().any(|d| d.starts_with("resolver ")),
        "no resolver"
    );
    let mut upstreams = 0;
    let mut in_upstream = false;
    let mut zoned = false;
    for directive in &directives {
        if directive.starts_with("upstream ") {
            (in_upstream, zoned) = (true, false);
            upstreams += 1;
        } else if in_upstream && *directive == "}" {
            assert!(zoned, "an upstream without a zone cannot re-resolve");
            in_upstream = false;
        } else if in_upstream && directive.starts_with("zone ") {
            zoned = true;
        } else if in_upstream && directive.starts_with("server ") {
            assert!(
                directive
                    .trim_end_matches(';')
                    .split_whitespace()
                    .any(|w| w == "resolve"),
                "{directive} is resolved only when nginx starts"
            );
        }
    }
    assert_eq!(upstreams, 2);

    let (_, lb) = services("docker-compose.cluster.yml")
        .into_iter()
        .find(|(name, _)| name == "lb")
        .expect("the cluster file has no lb");
    let image = lb["image"].as_str().unwrap();
    let version: Vec<u32> = image
        .strip_prefix("nginx:")
        .and_then(|tag| tag.split('-').next())
        .map(|v| v.split('.').map_while(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    assert!(
        version.len() >= 2 && version.as_slice() >= [1, 27, 3].as_slice(),
        "{image}: pin nginx 1.27.3 or newer, the first open-source release with `resolve`"
    );
}
