//! The `mup-sim` binary: seeds from a file, says where it listens, serves
//! with the given credentials and stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

#[tokio::test]
async fn the_binary_serves_a_seeded_state_until_sigterm() {
    let dir = std::env::temp_dir().join(format!("mup-sim-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = dir.join("seed.yaml");
    std::fs::write(
        &seed,
        "users:\n  - {username: pi, email: pi@example.org}\n\
         projects:\n  - {grant_number: \"2025.001\", title: Demo, pi: pi@example.org}\n\
         allocations:\n  - {project_grant: \"2025.001\", type: cpu, identifier: demo_cpu, size: 10}\n\
         usage:\n  - {identifier: demo_cpu, users: {pi: 2.5}}\n",
    )
    .unwrap();
    let password = dir.join("password");
    std::fs::write(&password, "pw\n").unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_mup-sim"))
        .args(["serve", "--listen", "127.0.0.1:0", "--username", "ci"])
        .arg("--password-file")
        .arg(&password)
        .arg("--seed")
        .arg(&seed)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "exited early");
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            break addr.to_owned();
        }
    };

    let usage: Value = reqwest::Client::new()
        .get(format!("http://{addr}/api/projects/1/allocations/1/usage"))
        .basic_auth("ci", Some("pw"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        usage,
        json!({"total": 2.5, "users": {"pi": 2.5}, "unit": "core-hours"})
    );

    #[cfg(unix)]
    {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(child.wait().unwrap().success(), "SIGTERM stops it cleanly");
    }
    #[cfg(not(unix))]
    child.kill().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_binary_needs_a_password() {
    let out = Command::new(env!("CARGO_BIN_EXE_mup-sim"))
        .args(["serve", "--username", "ci", "--listen", "127.0.0.1:0"])
        .env_remove("MUP_SIM_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MUP_SIM_PASSWORD"), "{stderr}");
}
