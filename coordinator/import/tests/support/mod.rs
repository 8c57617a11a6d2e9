//! What the migration tests share: fixtures, options and readers of the
//! generated YAML.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use waldur_config_import::{BACKEND_SERVER_FILE_NAME, Migration, Options, SecretToWrite, migrate};

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).expect("fixture exists")
}

pub fn options() -> Options {
    Options {
        source: PathBuf::from("/etc/waldur/waldur-site-agent-config.yaml"),
        out_dir: PathBuf::from("/etc/waldur/new"),
        ..Options::default()
    }
}

pub fn run(name: &str) -> Migration {
    migrate(&fixture(name), &options()).expect("fixture migrates")
}

pub fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).expect("generated yaml parses")
}

pub fn coordinator(m: &Migration) -> Value {
    yaml(&m.coordinator_yaml)
}

pub fn server(m: &Migration) -> Value {
    assert_eq!(m.backend_servers.len(), 1);
    assert_eq!(m.backend_servers[0].file_name, BACKEND_SERVER_FILE_NAME);
    yaml(&m.backend_servers[0].yaml)
}

pub fn offering<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["offerings"]
        .as_array()
        .expect("offerings list")
        .iter()
        .find(|o| o["name"] == name)
        .expect("offering present")
}

pub fn instance<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["instances"]
        .as_array()
        .expect("instances list")
        .iter()
        .find(|i| i["name"] == name)
        .expect("instance present")
}

pub fn note_about(m: &Migration, needles: &[&str]) -> bool {
    m.notes
        .iter()
        .any(|n| needles.iter().all(|needle| n.contains(needle)))
}

pub fn secret<'a>(m: &'a Migration, file: &str) -> &'a SecretToWrite {
    m.secrets
        .iter()
        .find(|s| s.file_name == file)
        .expect("secret present")
}
