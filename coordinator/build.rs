// The commit stamp for `--version`, shared with the backend server.
include!("../backend-server/runtime/build/commit.rs");
