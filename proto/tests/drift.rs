//! Regenerates the Rust code from the `.proto` files and fails when it differs
//! from what is committed under `src/gen/`, so the committed code can never
//! drift from the contract. Builds need no `protoc`; this test does (Debian's
//! `protobuf-compiler`).
//!
//! To accept a change to the protos: `UPDATE_PROTO=1 cargo test -p waldur-backend-proto --test drift`.

#![allow(clippy::unwrap_used)] // a test's input is its own

use std::path::{Path, PathBuf};

const GENERATED: &[&str] = &["waldur.backend.v1.rs", "descriptor.bin"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate(out: &Path) {
    let root = crate_dir();
    let protos = [
        root.join("waldur/backend/v1/backend.proto"),
        root.join("waldur/backend/v1/options.proto"),
    ];
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out)
        .file_descriptor_set_path(out.join("descriptor.bin"))
        // ResourceInfo carries credentials marked `sensitive`: its Debug is
        // written by hand in lib.rs and redacts them.
        .skip_debug(["waldur.backend.v1.ResourceInfo"])
        .compile_protos(&protos, &[root])
        .unwrap_or_else(|e| {
            panic!("protoc failed ({e}); install Debian's protobuf-compiler to run this test")
        });
}

#[test]
fn committed_generated_code_matches_the_protos() {
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path());
    let committed_dir = crate_dir().join("src/gen");
    let update = std::env::var_os("UPDATE_PROTO").is_some();
    let mut stale = Vec::new();
    for name in GENERATED {
        let fresh = std::fs::read(tmp.path().join(name)).unwrap();
        let committed_path = committed_dir.join(name);
        if update {
            std::fs::write(&committed_path, &fresh).unwrap();
            continue;
        }
        let committed = std::fs::read(&committed_path).unwrap_or_default();
        if committed != fresh {
            stale.push(*name);
        }
    }
    assert!(
        stale.is_empty(),
        "generated code is stale: {stale:?}; run UPDATE_PROTO=1 cargo test -p waldur-backend-proto --test drift and commit"
    );
}
