//! A fuzzer nobody here wrote checks both services against the documents
//! they serve: schemathesis (PyPI; `scripts/test.sh` installs it into
//! `.tools/`) reads each `GET /openapi.json` and sends generated requests to
//! every operation — examples, boundary values, random and stateful
//! sequences — checking that no answer is a 5xx and that every answer (its
//! status, headers, media type and body) is one the document declares.
//! Its settings, and why, are in `e2e-tests/schemathesis.toml`.

use std::path::{Path, PathBuf};

use e2e_tests::{Mode, TestEnv};

/// The schemathesis installed in `.tools/`, with the directory its Python
/// packages are in.
fn schemathesis() -> Option<(PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/schemathesis");
    let st = dir.join("bin/st");
    st.is_file().then_some((st, dir))
}

/// Runs schemathesis against the document at `base/openapi.json`; panics
/// with its report unless every check passed.
async fn fuzz(service: &str, base: &str) {
    let Some((st, packages)) = schemathesis() else {
        eprintln!(
            "skipped: schemathesis is not installed in .tools/ (scripts/test.sh installs it with pip)"
        );
        return;
    };
    // Hypothesis keeps its example database in the working directory.
    let workdir = tempfile::tempdir().expect("a scratch directory");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis.toml");
    let output = tokio::process::Command::new("python3")
        .arg(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--checks", "all", "--max-examples", "25", "--seed", "1"])
        .env("PYTHONPATH", &packages)
        .env("NO_COLOR", "1")
        .current_dir(workdir.path())
        .output()
        .await
        .expect("running schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found {service} answering outside its document:\n{report}{}",
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
    let env = TestEnv::new("api_contract").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let rewards = env.rewards_service().start().await;

    tokio::join!(
        fuzz("order-service", orders.url()),
        fuzz("rewards-service", rewards.url()),
    );
}
