//! The status view: per offering and task what the last cycle did (when,
//! how long, what changed or why it failed), the membership breaker, the
//! backend links and the Helmholtz broker links. The admin port serves it
//! as a page at `/` (no external assets, refreshes itself) and as JSON at
//! `/status.json`, which `waldur-coordinator status` prints.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::Coordinator;

/// What one cycle did.
#[derive(Debug, Clone, Default)]
pub struct Cycled {
    /// One line for the log and the status view.
    pub summary: Option<String>,
    /// What is left for a later cycle: orders still open, resources
    /// deferred or not reported.
    pub backlog: usize,
}

/// How a dial-in backend is connected: since when, from which certificate,
/// how often it reconnected.
pub fn describe_link(l: &crate::backend::LinkStatus) -> String {
    if !l.listening {
        return "tunnel, its port is held by another process (the running coordinator: see its /readyz)".into();
    }
    match (l.connected_since, &l.peer) {
        (Some(since), Some(peer)) => format!(
            "tunnel, connected since {} from {peer}, {} reconnects",
            jiff::Timestamp::try_from(since)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            l.reconnects
        ),
        _ => format!("tunnel, not connected, {} reconnects", l.reconnects),
    }
}

/// What a task's last cycle did; updated by the task loop.
#[derive(Debug, Default)]
pub struct LastCycle(Mutex<TaskStatus>);

impl LastCycle {
    /// Records a finished cycle: what it did, or the error.
    pub fn record(&self, took: Duration, outcome: Result<Cycled, String>) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.cycles += 1;
        s.finished_at = Some(jiff::Timestamp::now().to_string());
        s.duration_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
        match outcome {
            Ok(done) => {
                s.result = done.summary.or_else(|| Some("nothing to do".into()));
                s.backlog = Some(done.backlog as u64);
                s.error = None;
            }
            Err(e) => {
                s.failures += 1;
                s.result = None;
                s.error = Some(e);
            }
        }
    }

    fn snapshot(&self, task: &str) -> TaskStatus {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.task = task.to_owned();
        s
    }
}

/// One task of one offering.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskStatus {
    /// `orders`, `membership` or `report`.
    pub task: String,
    /// When the last cycle ended (RFC 3339); none before the first.
    pub finished_at: Option<String>,
    /// How long it took.
    pub duration_ms: Option<u64>,
    /// What it did (`3 orders`, ...).
    pub result: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Left for a later cycle after the last good one: orders still open
    /// (pending, in progress, deferred), resources deferred or not reported.
    pub backlog: Option<u64>,
    /// Cycles since start.
    pub cycles: u64,
    /// Of which failed.
    pub failures: u64,
}

/// One offering.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OfferingStatus {
    /// Its name.
    pub name: String,
    /// Its enabled tasks.
    pub tasks: Vec<TaskStatus>,
    /// The membership breaker's message when it tripped.
    pub breaker: Option<String>,
}

/// One backend link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    /// Config key.
    pub name: String,
    /// `direct`, or how the tunnel link stands.
    pub link: String,
}

/// One Helmholtz service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// Consuming from the broker.
    pub connected: bool,
}

/// The whole view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// `waldur-coordinator <version> (commit ...)`.
    pub version: String,
    /// Offerings in config order.
    pub offerings: Vec<OfferingStatus>,
    /// Backends by name.
    pub backends: Vec<BackendStatus>,
    /// Helmholtz services.
    pub helmholtz: Vec<ServiceStatus>,
}

/// The view of a running coordinator (no network calls: it only reads
/// what the loops recorded).
pub fn status(c: &Coordinator) -> Status {
    let offerings = c
        .offerings
        .iter()
        .map(|o| {
            let mut tasks = Vec::new();
            if let Some(t) = &o.orders {
                tasks.push(t.last.snapshot("orders"));
            }
            if let Some(t) = &o.membership {
                tasks.push(t.last.snapshot("membership"));
            }
            if let Some(t) = &o.report {
                tasks.push(t.last.snapshot("report"));
            }
            OfferingStatus {
                name: o.config.name.clone(),
                tasks,
                breaker: o
                    .membership
                    .as_ref()
                    .and_then(|m| m.processor.tripped())
                    .map(|t| t.message),
            }
        })
        .collect();
    let backends = c
        .backends
        .iter()
        .map(|(name, b)| BackendStatus {
            name: name.clone(),
            link: match b.link_status() {
                None => "direct".into(),
                Some(l) => describe_link(&l),
            },
        })
        .collect();
    let helmholtz = c
        .hca
        .iter()
        .map(|(s, link)| ServiceStatus {
            name: s.config.name.clone(),
            connected: link.connected(),
        })
        .collect();
    Status {
        version: format!("waldur-coordinator {}", waldur_runtime::version!()),
        offerings,
        backends,
        helmholtz,
    }
}

/// The view as plain text, for `waldur-coordinator status`.
pub fn text(s: &Status) -> String {
    let mut out = format!("{}\n", s.version);
    for o in &s.offerings {
        out.push_str(&format!("offering {}\n", o.name));
        for t in &o.tasks {
            let when = match (&t.finished_at, t.duration_ms) {
                (Some(at), Some(ms)) => format!("last cycle {at}, {ms} ms"),
                _ => "no cycle yet".into(),
            };
            let what = match (&t.error, &t.result) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, Some(r)) => r.clone(),
                (None, None) => String::new(),
            };
            let backlog = t
                .backlog
                .filter(|b| *b > 0)
                .map(|b| format!("; backlog {b}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<10} {when}; {what}{backlog} ({} cycles, {} failed)\n",
                t.task, t.cycles, t.failures
            ));
        }
        if let Some(b) = &o.breaker {
            out.push_str(&format!("  breaker TRIPPED: {b}\n"));
        }
    }
    for b in &s.backends {
        out.push_str(&format!("backend {}: {}\n", b.name, b.link));
    }
    for h in &s.helmholtz {
        let state = if h.connected {
            "connected"
        } else {
            "NOT connected"
        };
        out.push_str(&format!("helmholtz {}: {state}\n", h.name));
    }
    out
}

/// The view as a page: no scripts, no external assets, refreshed every
/// 10 s by the browser.
pub fn html(s: &Status) -> String {
    let e = escape;
    let mut body = String::new();
    for o in &s.offerings {
        body.push_str(&format!("<h2>Offering {}</h2>\n", e(&o.name)));
        if let Some(b) = &o.breaker {
            body.push_str(&format!("<p class=\"bad\">Breaker tripped: {}</p>\n", e(b)));
        }
        body.push_str("<table><tr><th>Task</th><th>Last cycle</th><th>Took</th><th>Result</th><th>Backlog</th><th>Cycles</th><th>Failed</th></tr>\n");
        for t in &o.tasks {
            let (class, what) = match (&t.error, &t.result) {
                (Some(err), _) => ("bad", err.clone()),
                (None, Some(r)) => ("ok", r.clone()),
                (None, None) => ("", "no cycle yet".into()),
            };
            body.push_str(&format!(
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                e(&t.task),
                e(t.finished_at.as_deref().unwrap_or("-")),
                t.duration_ms.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "-".into()),
                e(&what),
                t.backlog.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
                t.cycles,
                t.failures
            ));
        }
        body.push_str("</table>\n");
    }
    if !s.backends.is_empty() {
        body.push_str("<h2>Backends</h2>\n<table><tr><th>Backend</th><th>Link</th></tr>\n");
        for b in &s.backends {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>\n",
                e(&b.name),
                e(&b.link)
            ));
        }
        body.push_str("</table>\n");
    }
    if !s.helmholtz.is_empty() {
        body.push_str(
            "<h2>Helmholtz Cloud</h2>\n<table><tr><th>Service</th><th>Broker</th></tr>\n",
        );
        for h in &s.helmholtz {
            let (class, state) = if h.connected {
                ("ok", "connected")
            } else {
                ("bad", "not connected")
            };
            body.push_str(&format!(
                "<tr class=\"{class}\"><td>{}</td><td>{state}</td></tr>\n",
                e(&h.name)
            ));
        }
        body.push_str("</table>\n");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\">\
<title>waldur-coordinator status</title><style>\
body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
.bad{{color:#a00}}.ok td:nth-child(4){{color:#070}}\
</style></head><body><h1>waldur-coordinator status</h1><p>{}</p>\n{body}\
<p>Also as <a href=\"/status.json\">JSON</a>, <a href=\"/readyz\">readiness</a> and <a href=\"/metrics\">metrics</a>.</p></body></html>\n",
        e(&s.version)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        let last = LastCycle::default();
        last.record(
            Duration::from_millis(12),
            Ok(Cycled {
                summary: Some("2 orders".into()),
                backlog: 1,
            }),
        );
        let failed = LastCycle::default();
        failed.record(Duration::from_millis(5), Err("waldur <down>".into()));
        Status {
            version: "waldur-coordinator 0.1.0".into(),
            offerings: vec![OfferingStatus {
                name: "HPC <main>".into(),
                tasks: vec![last.snapshot("orders"), failed.snapshot("report")],
                breaker: Some("would remove 40 members".into()),
            }],
            backends: vec![BackendStatus {
                name: "hpc".into(),
                link: "direct".into(),
            }],
            helmholtz: vec![ServiceStatus {
                name: "desy".into(),
                connected: false,
            }],
        }
    }

    #[test]
    fn the_page_and_the_text_show_every_task_the_breaker_and_the_links_escaped() {
        let s = sample();
        let page = html(&s);
        assert!(page.contains("HPC &lt;main&gt;") && !page.contains("<main>"));
        assert!(page.contains("2 orders") && page.contains("waldur &lt;down&gt;"));
        assert!(page.contains("Breaker tripped") && page.contains("not connected"));
        assert!(
            !page.contains("<script") && !page.contains("http://") && !page.contains("https://")
        );
        let t = text(&s);
        assert!(
            t.contains("2 orders; backlog 1 (1 cycles, 0 failed)"),
            "{t}"
        );
        assert!(page.contains("<td>2 orders</td><td>1</td>"), "{page}");
        assert!(
            t.contains("FAILED: waldur <down>") && t.contains("breaker TRIPPED"),
            "{t}"
        );
        assert!(t.contains("helmholtz desy: NOT connected"), "{t}");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }
}
