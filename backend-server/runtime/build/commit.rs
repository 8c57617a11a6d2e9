// The build script of both binaries (included by coordinator/build.rs and
// backend-server/bin/build.rs): puts the commit the binary is built from
// into `WALDUR_COMMIT`, for `--version`. A packager building from a source
// tarball may set WALDUR_COMMIT; without git it says `unknown`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Asks cargo to run the script again when `path` changes. Only paths that
/// exist: cargo treats a missing one as always changed and would rebuild
/// the crate on every build.
fn watch(path: &Path) {
    if path.try_exists().unwrap_or(false) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn main() {
    let commit = std::env::var("WALDUR_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WALDUR_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=WALDUR_COMMIT");
    // Again when HEAD moves: HEAD itself (a checkout) and the branch it
    // names (a commit), loose or packed; refs live in the common dir of a
    // worktree.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watch(&Path::new(&dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
        let common = Path::new(&common);
        watch(&common.join("packed-refs"));
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch(&common.join(branch));
        }
    }
}
