//! The status view of a running coordinator: the admin port's page (checked
//! in a real headless browser, Debian's chromium, when it is installed, as
//! `deploy/test.sh` does), its JSON, and `waldur-coordinator status`.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Options, World};
use waldur_coordinator::runtime::status::Status;

const BIN: &str = env!("CARGO_BIN_EXE_waldur-coordinator");

/// Debian's chromium, if installed.
fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).try_exists().unwrap_or(false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_the_json_and_the_status_command_show_every_tasks_last_cycle() {
    let w = World::start(Options::default()).await;
    let c = Arc::new(support::build_coordinator(&w.config, &w.env, None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(waldur_coordinator::runtime::admin::serve(
        listener,
        c.clone(),
    ));
    let run = tokio::spawn(c.clone().run(std::future::pending()));

    // Every enabled task finishes its first cycle.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let s: Status = reqwest::get(format!("{base}/status.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tasks = &s.offerings[0].tasks;
        if tasks.len() == 3 && tasks.iter().all(|t| t.cycles >= 1) {
            break s;
        }
        assert!(Instant::now() < deadline, "no first cycles: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let offering = status.offerings[0].name.clone();
    for t in &status.offerings[0].tasks {
        assert!(t.finished_at.is_some() && t.duration_ms.is_some(), "{t:?}");
        assert!(t.error.is_none(), "{t:?}");
    }
    assert_eq!(status.backends[0].link, "direct");

    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(&format!("Offering {offering}")), "{page}");
    for task in ["orders", "membership", "report"] {
        assert!(page.contains(&format!("<td>{task}</td>")), "{page}");
    }

    let out = tokio::task::block_in_place(|| {
        Command::new(BIN)
            .args(["status", "--url", &base])
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("offering {offering}")), "{text}");
    assert!(
        text.contains("membership") && text.contains("last cycle "),
        "{text}"
    );
    assert!(text.contains("backend hpc: direct"), "{text}");

    match chromium() {
        Some(browser) => {
            let profile = tempfile::tempdir().unwrap();
            let out = tokio::task::block_in_place(|| {
                Command::new(browser)
                    .args([
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-quic",
                        "--no-first-run",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--dump-dom",
                    ])
                    .arg(format!("--user-data-dir={}", profile.path().display()))
                    .arg(format!("{base}/"))
                    .output()
                    .unwrap()
            });
            let dom = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "chromium: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The browser built the page: its title, every task row, the links.
            assert!(
                dom.contains("<title>waldur-coordinator status</title>"),
                "{dom}"
            );
            for task in ["orders", "membership", "report"] {
                assert!(dom.contains(&format!("<td>{task}</td>")), "{dom}");
            }
            assert!(dom.contains("href=\"/status.json\""), "{dom}");
        }
        None if std::env::var_os("WALDUR_BROWSER_TESTS").is_some() => {
            panic!("WALDUR_BROWSER_TESTS is set but chromium is not installed")
        }
        None => eprintln!("browser check skipped: chromium is not installed"),
    }
    run.abort();
}

#[test]
fn status_without_a_running_coordinator_says_where_it_looked() {
    let out = Command::new(BIN)
        .args(["status", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no status from http://127.0.0.1:9"), "{err}");
}
