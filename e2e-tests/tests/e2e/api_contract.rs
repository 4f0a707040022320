//! A fuzzer nobody here wrote checks both services against the documents
//! they serve: schemathesis (PyPI; `scripts/test.sh` installs it into
//! `.tools/`) reads each `GET /openapi.json` and sends generated requests to
//! every operation — examples, boundary values, random and stateful
//! sequences — checking that no answer is a 5xx and that every answer (its
//! status, headers, media type and body) is one the document declares.
//! Each run draws a fresh seed, so the suite explores new requests every
//! time; the seed is printed, and `SCHEMATHESIS_SEED=<seed>` replays a run.
//! Order-service's settings, and why, are in `e2e-tests/schemathesis.toml`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use harness::{Mode, TestEnv};

/// Generated requests per operation in the fuzzing phase, after the
/// documents' examples and the boundary values of the coverage phase: a
/// fixed count keeps a seed's run the same, so that it can be replayed.
const MAX_EXAMPLES: &str = "100";

/// The schemathesis installed in `.tools/`, with the directory its Python
/// packages are in.
fn schemathesis() -> Option<(PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/schemathesis");
    let st = dir.join("bin/st");
    st.is_file().then_some((st, dir))
}

/// `SCHEMATHESIS_SEED` to replay a run, otherwise one from the clock.
fn seed() -> u64 {
    match std::env::var("SCHEMATHESIS_SEED") {
        Ok(seed) => seed
            .parse()
            .expect("SCHEMATHESIS_SEED must be a whole number (a seed a run printed)"),
        Err(_) => {
            let since_epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("a clock after 1970");
            // Hypothesis takes any integer; a short one is easier to copy.
            since_epoch.as_nanos() as u64 % 1_000_000_000
        }
    }
}

/// Runs schemathesis against the document at `base/openapi.json`, with the
/// settings in `config` if any; panics with its report, and the seed that
/// replays it, unless every check passed.
async fn fuzz(service: &str, base: &str, config: Option<&str>, seed: u64) {
    let Some((st, packages)) = schemathesis() else {
        eprintln!(
            "skipped: schemathesis is not installed in .tools/ (scripts/test.sh installs it with pip)"
        );
        return;
    };
    // Hypothesis keeps its example database in the working directory.
    let workdir = tempfile::tempdir().expect("a scratch directory");
    let mut command = tokio::process::Command::new("python3");
    command.arg(&st);
    if let Some(config) = config {
        command
            .arg("--config-file")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(config));
    }
    let output = command
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--checks", "all", "--max-examples", MAX_EXAMPLES])
        .args(["--seed", &seed.to_string()])
        .env("PYTHONPATH", &packages)
        .env("NO_COLOR", "1")
        .current_dir(workdir.path())
        .output()
        .await
        .expect("running schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found {service} answering outside its document \
         (replay with SCHEMATHESIS_SEED={seed}):\n{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = report
        .lines()
        .filter(|line| line.contains("generated") || line.contains("No issues"))
        .collect::<Vec<_>>()
        .join("; ");
    eprintln!("schemathesis against {service}: {}", summary.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_answer_a_fuzzer_only_as_their_documents_say() {
    let seed = seed();
    eprintln!("schemathesis seed {seed} (replay with SCHEMATHESIS_SEED={seed})");
    let env = TestEnv::new("api_contract").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let rewards = env.rewards_service().start().await;

    tokio::join!(
        fuzz(
            "order-service",
            orders.url(),
            Some("schemathesis.toml"),
            seed
        ),
        fuzz("rewards-service", rewards.url(), None, seed),
    );
}
