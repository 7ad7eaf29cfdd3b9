//! An independent client: Python grpcio with the `xds-protos` package's
//! generated Envoy stubs (tests/python/envoy_client.py), against a real
//! tollgate and Redis. scripts/test.sh installs both into a virtualenv and
//! names its interpreter in TOLLGATE_TEST_PYTHON.

use std::process::Command;

use serde_json::Value;

use crate::support::{shared_redis, unique_prefix, TestServer};

const CONFIG: &str = r#"
[server]
grpc_listen = "127.0.0.1:0"

[[rule]]
name = "py-rls"
domain = "py"
descriptor = [{ key = "remote_address" }]
limits = ["2/m"]

[[rule]]
name = "py-login"
match = { path = "/login", methods = ["POST"] }
limits = ["1/m"]
"#;

/// The test virtualenv's interpreter (grpcio, xds-protos, the Python client
/// package and its frameworks; `python_client` runs it too): TOLLGATE_TEST_PYTHON, else the
/// virtualenv scripts/test.sh makes under the target directory.
pub(crate) fn python() -> String {
    if let Ok(p) = std::env::var("TOLLGATE_TEST_PYTHON") {
        return p;
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    format!("{target}/grpc-venv/bin/python")
}

#[tokio::test]
async fn python_grpcio_with_xds_protos_stubs_gets_rls_and_ext_authz_answers() {
    let s = TestServer::start(CONFIG, Some(&shared_redis().url()), &unique_prefix("py")).await;
    let addr = s.grpc_addr.unwrap().to_string();
    let python = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/envoy_client.py");
    let out =
        tokio::task::spawn_blocking(move || Command::new(&python).arg(script).arg(&addr).output())
            .await
            .unwrap()
            .unwrap_or_else(|e| {
                panic!("cannot run the Python client ({e}); scripts/test.sh installs it")
            });
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();

    let rls = seen["rls"].as_array().unwrap();
    let codes: Vec<&str> = rls.iter().map(|r| r["overall"].as_str().unwrap()).collect();
    assert_eq!(codes, ["OK", "OK", "OVER_LIMIT"]);
    let remaining: Vec<u64> = rls
        .iter()
        .map(|r| r["remaining"].as_u64().unwrap())
        .collect();
    assert_eq!(remaining, [1, 0, 0]);
    assert_eq!(rls[0]["unit"], "MINUTE");
    assert_eq!(rls[0]["requests_per_unit"], 2);
    let reset = rls[0]["reset_seconds"].as_i64().unwrap();
    assert!((1..=60).contains(&reset), "{reset}");
    assert_eq!(rls[0]["headers"]["ratelimit-policy"], "\"py-rls\";q=2;w=60");
    assert!(rls[2]["headers"]["retry-after"].is_string());

    let authz = seen["ext_authz"].as_array().unwrap();
    assert_eq!(authz[0]["grpc_code"], 0);
    assert_eq!(authz[0]["http_status"], 200);
    assert_eq!(authz[0]["headers"]["x-ratelimit-remaining"], "0");
    assert_ne!(authz[1]["grpc_code"], 0);
    assert_eq!(authz[1]["http_status"], 429);
    assert!(authz[1]["headers"]["retry-after"].is_string());
}
