//! Every command the documents show for the two binaries parses: each is
//! run with `--help` appended, so clap checks the subcommands and flags it
//! names (and stops before doing anything). Every script a document runs
//! exists and is executable. A doc that drifts from the binaries fails
//! here, not on an operator's first day.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const COORDINATOR: &str = env!("CARGO_BIN_EXE_waldur-coordinator");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every Markdown file of the repository outside build output.
fn documents() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    dirs.push(path);
                }
            } else if name.ends_with(".md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Shell lines of fenced code blocks (continuations joined) and inline
/// code spans, with the line they start on.
fn commands(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence: Option<bool> = None; // Some(is a shell block)
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(matches!(
                    lang.trim(),
                    "sh" | "bash" | "console" | "shell" | ""
                )),
            };
            continue;
        }
        match fence {
            Some(true) => {
                let (start, mut joined) = pending.take().unwrap_or((n + 1, String::new()));
                let body = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
                if let Some(head) = body.strip_suffix('\\') {
                    joined.push_str(head);
                    joined.push(' ');
                    pending = Some((start, joined));
                } else {
                    joined.push_str(body);
                    out.push((start, joined));
                }
            }
            Some(false) => {}
            None => {
                let mut rest = line;
                while let Some(i) = rest.find('`') {
                    let after = &rest[i + 1..];
                    let Some(j) = after.find('`') else { break };
                    out.push((n + 1, after[..j].to_owned()));
                    rest = &after[j + 1..];
                }
            }
        }
    }
    out
}

/// Words of a shell line, quotes removed, up to the first pipe, redirect,
/// `&&`, `;` or comment.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    let end = out
        .iter()
        .position(|w| {
            matches!(w.as_str(), "|" | "&&" | "||" | ";" | "&")
                || w.starts_with('>')
                || w.starts_with('<') && !w.ends_with('>')
                || w.starts_with('#')
        })
        .unwrap_or(out.len());
    out.truncate(end);
    out
}

/// The binary a command runs (the first word naming one, after `sudo`,
/// `env` and variable assignments), and its arguments.
fn invocation(words: &[String]) -> Option<(&'static str, Vec<String>)> {
    let mut rest = words;
    while let Some((first, tail)) = rest.split_first() {
        if first == "sudo" || first == "env" || first.contains('=') && !first.starts_with('-') {
            rest = tail;
            continue;
        }
        let name = first.rsplit('/').next().unwrap_or(first);
        let bin = match name {
            "waldur-coordinator" => "waldur-coordinator",
            "waldur-backend-server" => "waldur-backend-server",
            _ => return None,
        };
        return Some((bin, tail.to_vec()));
    }
    None
}

fn backend_server() -> PathBuf {
    // Built by the workspace build the test command runs first.
    Path::new(COORDINATOR).with_file_name("waldur-backend-server")
}

#[test]
fn every_command_in_the_documents_parses_and_every_script_exists() {
    let server = backend_server();
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let shown = doc
            .strip_prefix(root())
            .unwrap_or(&doc)
            .display()
            .to_string();
        for (line, command) in commands(&text) {
            let w = words(&command);
            // Scripts of the repository named by path.
            if let Some(script) = w.iter().find(|w| {
                w.ends_with(".sh") && (w.starts_with("./deploy/") || w.starts_with("deploy/"))
            }) {
                let path = root().join(script.trim_start_matches("./"));
                let executable = std::fs::metadata(&path)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
                    .unwrap_or(false);
                if !executable {
                    failures.push(format!(
                        "{shown}:{line}: {script} is not an executable script"
                    ));
                }
                checked += 1;
                continue;
            }
            let Some((bin, args)) = invocation(&w) else {
                continue;
            };
            // Shell expansions cannot be judged here.
            if args.iter().any(|a| a.contains("$(") || a.contains('`')) {
                continue;
            }
            let program = match bin {
                "waldur-coordinator" => PathBuf::from(COORDINATOR),
                _ if server.try_exists().unwrap_or(false) => server.clone(),
                _ => continue,
            };
            let out = Command::new(&program)
                .args(&args)
                .arg("--help")
                .output()
                .unwrap();
            checked += 1;
            if !out.status.success() {
                let why = String::from_utf8_lossy(&out.stderr);
                failures.push(format!(
                    "{shown}:{line}: `{command}`: {}",
                    why.lines()
                        .find(|l| l.starts_with("error"))
                        .unwrap_or(why.trim())
                ));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} commands found: is the extraction broken?"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} commands do not parse:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_extractor_finds_block_and_inline_commands() {
    let text = "Run `waldur-coordinator check --config c.yaml` first.\n```sh\n$ sudo waldur-backend-server serve \\\n    --config /etc/x.yaml | tee log # note\n```\n```yaml\nwaldur-coordinator: not a command\n```\n";
    let found: Vec<Vec<String>> = commands(text).iter().map(|(_, c)| words(c)).collect();
    assert_eq!(
        found[0],
        ["waldur-coordinator", "check", "--config", "c.yaml"]
    );
    assert_eq!(
        found[1],
        [
            "sudo",
            "waldur-backend-server",
            "serve",
            "--config",
            "/etc/x.yaml"
        ]
    );
    assert_eq!(found.len(), 2);
    let (bin, args) = invocation(&found[1]).unwrap();
    assert_eq!((bin, args.len()), ("waldur-backend-server", 3));
}

#[test]
fn certificate_file_names_agree_across_documents_and_reference_configs() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).unwrap();
    for (file, names) in [
        (
            "deploy/PKI.md",
            &[
                "ca.pem",
                "backend.pem",
                "backend.key",
                "coordinator.pem",
                "coordinator.key",
            ][..],
        ),
        (
            "deploy/OPERATOR.md",
            &[
                "ca.pem",
                "backend.pem",
                "backend.key",
                "coordinator.pem",
                "coordinator.key",
            ],
        ),
        (
            "deploy/config/backend-server.example.yaml",
            &[
                "/etc/waldur/pki/ca.pem",
                "/etc/waldur/pki/backend.pem",
                "/etc/waldur/pki/backend.key",
            ],
        ),
        (
            "deploy/config/coordinator.example.yaml",
            &[
                "/etc/waldur/pki/ca.pem",
                "/etc/waldur/pki/coordinator.pem",
                "/etc/waldur/pki/coordinator.key",
            ],
        ),
        // What import-config writes into the configs it generates.
        (
            "coordinator/import/src/lib.rs",
            &["\"backend.pem\"", "\"backend.key\""],
        ),
        (
            "coordinator/import/src/paths.rs",
            &["\"coordinator.pem\"", "\"coordinator.key\""],
        ),
    ] {
        let text = read(file);
        for name in names {
            assert!(text.contains(name), "{file} does not name {name}");
        }
        assert!(
            !text.contains("<host>.pem"),
            "{file} names the server certificate differently"
        );
    }
}
