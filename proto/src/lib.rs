//! Wire types and gRPC stubs of the `waldur.backend.v1` contract.
//!
//! The code under `src/gen/` is generated from `waldur/backend/v1/*.proto` and
//! committed, so building needs no `protoc`; `tests/drift.rs` regenerates it
//! and fails on any difference. The normative description of every RPC is
//! `proto/SPEC.md`.
#![allow(missing_docs)]

/// The generated `waldur.backend.v1` package.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    include!("gen/waldur.backend.v1.rs");

    impl std::fmt::Debug for ResourceInfo {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // `credentials` is marked `(sensitive) = true` in the proto: only
            // the keys are shown, never the values.
            let credential_keys: Vec<&String> = self.credentials.keys().collect();
            f.debug_struct("ResourceInfo")
                .field("backend_id", &self.backend_id)
                .field("parent_id", &self.parent_id)
                .field("effective_id", &self.effective_id)
                .field("description", &self.description)
                .field("limits", &self.limits)
                .field("metadata", &self.metadata)
                .field("endpoints", &self.endpoints)
                .field("users", &self.users)
                .field(
                    "credentials",
                    &format_args!("<redacted {credential_keys:?}>"),
                )
                .field("access", &self.access)
                .finish()
        }
    }
}

/// The encoded `FileDescriptorSet` of the contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/descriptor.bin");

/// The contract version this crate carries (see `proto/CHANGELOG.md`).
pub const CONTRACT_VERSION: &str = "1.0";

/// The `google.rpc.ErrorInfo` domain used by every error of the contract.
pub const ERROR_DOMAIN: &str = "backend.waldur.v1";

/// `google.rpc.ErrorInfo` reasons defined by `proto/SPEC.md` ("Errors").
pub mod reason {
    /// The request names an instance the server does not host (NOT_FOUND).
    pub const UNKNOWN_INSTANCE: &str = "UNKNOWN_INSTANCE";
    /// The resource does not exist on the backend (NOT_FOUND).
    pub const RESOURCE_NOT_FOUND: &str = "RESOURCE_NOT_FOUND";
    /// The backend id belongs to another resource (ALREADY_EXISTS).
    pub const RESOURCE_ALREADY_EXISTS: &str = "RESOURCE_ALREADY_EXISTS";
    /// A field is missing, too long or malformed (INVALID_ARGUMENT); the
    /// ErrorInfo metadata names it under `field`.
    pub const INVALID_FIELD: &str = "INVALID_FIELD";
    /// A limit or usage names a component the instance does not define
    /// (INVALID_ARGUMENT); metadata `component`.
    pub const UNKNOWN_COMPONENT: &str = "UNKNOWN_COMPONENT";
    /// The backend cannot serve now; retry later (UNAVAILABLE).
    pub const BACKEND_NOT_READY: &str = "BACKEND_NOT_READY";
    /// Another mutating call on the same resource is in flight (ABORTED).
    pub const RESOURCE_BUSY: &str = "RESOURCE_BUSY";
    /// The user must link an existing account first (FAILED_PRECONDITION);
    /// metadata `comment` and `comment_url`.
    pub const ACCOUNT_LINKING_REQUIRED: &str = "ACCOUNT_LINKING_REQUIRED";
    /// The user must pass additional validation first (FAILED_PRECONDITION);
    /// metadata `comment` and `comment_url`.
    pub const ADDITIONAL_VALIDATION_REQUIRED: &str = "ADDITIONAL_VALIDATION_REQUIRED";
    /// A slow operation failed on the backend side (FAILED_PRECONDITION).
    pub const OPERATION_FAILED: &str = "OPERATION_FAILED";
    /// The instance does not advertise the capability (UNIMPLEMENTED).
    pub const CAPABILITY_NOT_SUPPORTED: &str = "CAPABILITY_NOT_SUPPORTED";
    /// A cluster command or remote API failed (INTERNAL or UNAVAILABLE).
    pub const BACKEND_COMMAND_FAILED: &str = "BACKEND_COMMAND_FAILED";
    /// The client certificate's identity is not allowed (PERMISSION_DENIED).
    pub const IDENTITY_NOT_ALLOWED: &str = "IDENTITY_NOT_ALLOWED";
    /// The backend has an object by this name that it does not manage (a
    /// customer or project account, an account a person made): nothing was
    /// done to it (FAILED_PRECONDITION).
    pub const RESOURCE_NOT_MANAGED: &str = "RESOURCE_NOT_MANAGED";

    /// Every reason of the contract's error table. A backend may refuse with
    /// a reason of its own (upper snake case, for example `QUOTA_EXCEEDED`);
    /// upstream adapters show such reasons to users as the provider's own
    /// error type.
    pub const STANDARD: &[&str] = &[
        UNKNOWN_INSTANCE,
        RESOURCE_NOT_FOUND,
        RESOURCE_ALREADY_EXISTS,
        INVALID_FIELD,
        UNKNOWN_COMPONENT,
        BACKEND_NOT_READY,
        RESOURCE_BUSY,
        ACCOUNT_LINKING_REQUIRED,
        ADDITIONAL_VALIDATION_REQUIRED,
        OPERATION_FAILED,
        CAPABILITY_NOT_SUPPORTED,
        BACKEND_COMMAND_FAILED,
        IDENTITY_NOT_ALLOWED,
        RESOURCE_NOT_MANAGED,
    ];

    /// Is `reason` one of the contract's own?
    pub fn is_standard(reason: &str) -> bool {
        STANDARD.contains(&reason)
    }
}

#[cfg(test)]
mod spec_tests {
    /// `reason::STANDARD` is the SPEC's error table: a reason added there
    /// and not here would be shown to users as a provider's own.
    #[test]
    fn the_standard_reasons_are_the_spec_error_table() {
        let spec = include_str!("../SPEC.md");
        let table = &spec[spec.find("### 7.3 Error table").expect("SPEC has §7.3")..];
        let mut in_spec: Vec<&str> = table
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| l.split('|').nth(3))
            .map(str::trim)
            .filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        in_spec.sort_unstable();
        in_spec.dedup();
        let mut ours = super::reason::STANDARD.to_vec();
        ours.sort_unstable();
        assert_eq!(in_spec, ours);
    }
}
