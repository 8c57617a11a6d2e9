// The commit stamp for `--version`, shared with the coordinator.
include!("../runtime/build/commit.rs");
