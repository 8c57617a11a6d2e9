// The same commit stamp as the coordinator's (see coordinator/build.rs).
include!("../../coordinator/build.rs");
