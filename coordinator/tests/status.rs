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
        assert_eq!(t.backlog, Some(0), "nothing is left over: {t:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_receiver_prints_a_finished_order_trace_as_a_waterfall() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use std::io::BufRead;

    let port = support::free_port();
    let mut child = Command::new(BIN)
        .args([
            "traces",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--root",
            "order",
            "--quiet-ms",
            "200",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        match TraceServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "receiver did not start: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let span = |name: &str, id: u8, parent: Option<u8>, start: u64, end: u64| Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    };
    let service = |name: &str| Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(name.into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    client
        .export(ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(service("waldur-coordinator")),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span("order", 1, None, 1_000_000, 9_000_000)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    resource: Some(service("waldur-backend-server")),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span("rpc", 2, Some(1), 3_000_000, 5_000_000)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("rpc [waldur-backend-server]"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no waterfall printed: {seen:?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(
        text.contains("trace 07070707070707070707070707070707: 2 spans, 8.0 ms"),
        "{text}"
    );
    assert!(text.contains("order [waldur-coordinator]"), "{text}");
    // The child sits under its parent, a quarter of the way in.
    assert!(text.contains("      2.0 ms |"), "{text}");
}
