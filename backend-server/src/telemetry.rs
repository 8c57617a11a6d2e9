//! Logging set-up shared by the binaries: `RUST_LOG` filters (default
//! `info`), human or JSON lines on stderr. Trace export joins it later.

/// Installs the global subscriber; `json` selects JSON lines.
pub fn init_logging(json: bool) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // tungstenite traces frame payloads, the STOMP passcode included: never
    // below info, whatever RUST_LOG says.
    for quiet in ["tungstenite=info", "tokio_tungstenite=info"] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
