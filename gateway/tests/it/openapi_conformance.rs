//! Schemathesis (from the test venv, which `scripts/test` installs) generates requests from the
//! gateway's own `/openapi.json` for a bounded number of examples per operation, including
//! stateful sequences (upload, then status, download, delete), against the real gateway, auth,
//! storage and broker. It fails on any 5xx and on any response the document does not allow
//! (status, content type, headers, body schema), on an operation that answers without the auth
//! it declares, and on a deleted resource that is still there.
//!
//! Its input-validation checks (`positive_data_acceptance`, `negative_data_rejection`) are left
//! out: the API is deliberately lenient where a schema cannot be exact (e-mails are trimmed and
//! lower-cased, passwords are limited in bytes, not characters), and an "upload" of random bytes
//! is rightly refused with 415; `hostile_input.rs` pins those answers case by case.

use std::time::Duration;
use test_support::mesh::{Mesh, MeshOptions};

/// Bounds the run: examples per operation, and the whole run's time.
const MAX_EXAMPLES: &str = "100";
const RUN_LIMIT: Duration = Duration::from_secs(240);

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,ignored_auth,use_after_free,\
ensure_resource_availability,missing_required_header,unsupported_method";

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_response_outside_the_document() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let user = mesh.user("fuzzer@example.com").await;
    let base_url = mesh.gateway.url();
    // schemathesis keeps a cache in its working directory: not in the source tree.
    let scratch = test_support::temp_dir();
    // `/readyz` documents its 503 (a dependency is down or slow to answer its check): on a
    // loaded machine that is the right answer, not a server error. Every other operation keeps
    // the default, where any 5xx fails the run.
    let config = scratch.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        "[[operations]]\ninclude-path = \"/readyz\"\n\
         checks.not_a_server_error.expected-statuses = [\"2XX\", \"3XX\", \"4XX\", \"503\"]\n",
    )
    .unwrap();
    let (status, body) = mesh.readiness_when(|body| body["status"] == "ready").await;
    assert_eq!(status, 200, "the mesh is ready before it is fuzzed: {body}");
    let mut command = tokio::process::Command::new("st");
    // Its hooks (test-support/tools/schemathesis_hooks.py) make up tus bodies.
    let tools = concat!(env!("CARGO_MANIFEST_DIR"), "/../test-support/tools");
    command
        .current_dir(scratch.path())
        .env("PYTHONPATH", tools)
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &format!("{base_url}/openapi.json"),
            "--url",
            &base_url,
        ])
        .args(["--checks", CHECKS, "--max-examples", MAX_EXAMPLES])
        .args(["--request-timeout", "20", "--workers", "1", "--no-color"])
        .args(["--header", &format!("Authorization: Bearer {}", user.token)])
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .expect("schemathesis finishes within its bound")
        .expect(
            "schemathesis (`st`) runs: use scripts/test, which installs it into the venv on PATH",
        );
    let report = String::from_utf8_lossy(&output.stdout);
    // The summary: which operations, how many cases, what failed.
    let summary = report
        .find("SUMMARY")
        .map_or(report.as_ref(), |start| &report[start..]);
    println!("{summary}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains("Tested: 26"),
        "every operation was exercised:\n{report}"
    );
}
