//! The cases. Each states a behaviour in its name and enforces a SPEC.md
//! clause; the list at the bottom says which capabilities each needs.

mod access;
mod diagnostics;
mod identity;
mod limits;
mod membership;
mod orders;
mod resources;
mod usage;
mod usernames;
mod watch;

use waldur_backend_proto::v1::Capability;

use crate::{Case, status_text};

type R = Result<(), String>;

fn ok<T>(rpc: &str, r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, String> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| status_text(rpc, &s))
}

macro_rules! needs_fixture {
    () => {
        None
    };
    ($fx:ident) => {
        Some(crate::NeedsFixture {
            name: stringify!($fx),
            given: |fx| !fx.$fx.is_empty(),
        })
    };
}

macro_rules! cases {
    ($( $area:ident :: $name:ident, $clause:literal, [$($cap:ident),*] $(, fixture $fx:ident)?; )*) => {
        /// Every case, in the order they run.
        pub static CASES: &[Case] = &[
            $( Case {
                name: stringify!($name),
                clause: $clause,
                needs: &[$(Capability::$cap),*],
                fixture: needs_fixture!($($fx)?),
                run: |ctx| Box::pin($area::$name(ctx)),
            }, )*
        ];
    };
}

cases! {
    identity::backend_info_names_the_instance_and_the_contract_version, "SPEC 4.1", [];
    identity::capabilities_do_not_change_between_calls, "SPEC 4.2", [];
    identity::probe_reports_ready, "SPEC 4.3", [];
    identity::unknown_instance_is_not_found_with_reason, "SPEC 7.2", [];
    identity::missing_instance_is_invalid_argument, "SPEC 7.1", [];
    identity::oversized_instance_name_is_invalid_argument, "SPEC 7.1", [];
    identity::components_have_keys_labels_units_and_types, "SPEC 4.4", [];
    identity::generate_backend_id_is_a_pure_function, "SPEC 5.1", [];
    identity::unadvertised_rpcs_answer_unimplemented, "SPEC 4.2", [];
    resources::create_resource_is_idempotent, "SPEC 5.2", [Resources];
    resources::create_with_an_id_owned_by_another_resource_is_already_exists, "SPEC 5.2", [Resources];
    resources::get_missing_resource_is_not_found, "SPEC 5.3", [Resources];
    resources::delete_resource_is_idempotent, "SPEC 5.4", [Resources];
    resources::delete_of_a_missing_resource_succeeds, "SPEC 5.4", [Resources];
    resources::create_without_backend_id_is_invalid_argument, "SPEC 7.1", [Resources];
    resources::create_without_resource_uuid_is_invalid_argument, "SPEC 7.1", [Resources];
    resources::create_with_an_oversized_backend_id_is_invalid_argument, "SPEC 7.1", [Resources];
    resources::create_with_an_unknown_component_is_invalid_argument, "SPEC 7.1", [Resources];
    resources::create_with_a_negative_limit_is_invalid_argument, "SPEC 7.1", [Resources];
    resources::an_identifier_is_never_folded, "SPEC 7.1", [Resources];
    resources::what_the_backend_does_not_manage_is_refused_and_left_alone, "SPEC 5.3a", [Resources], fixture unmanaged_backend_id;
    watch::fast_backends_answer_ready_at_once, "SPEC 6.3", [Resources];
    membership::create_adds_the_requested_users, "SPEC 5.2", [Resources, Membership];
    resources::soft_delete_keeps_the_resource_with_zero_limits, "SPEC 5.4", [Resources, ResourceLimits];
    resources::list_resources_pages_cover_every_resource_once, "SPEC 5.5", [Resources, ListResources];
    resources::sync_resource_project_is_idempotent, "SPEC 5.6", [Resources, ProjectSync];
    limits::set_resource_limits_is_idempotent_and_full_state, "SPEC 5.7", [Resources, ResourceLimits];
    limits::limits_of_a_missing_resource_are_not_found, "SPEC 5.3", [ResourceLimits];
    limits::user_limits_are_set_read_and_removed, "SPEC 5.8", [Resources, Membership, UserLimits];
    access::pause_is_idempotent_and_reversible, "SPEC 5.9", [Resources, Pause];
    access::downscale_is_idempotent_and_reversible, "SPEC 5.9", [Resources, Downscale];
    access::unspecified_access_level_is_invalid_argument, "SPEC 5.9", [Pause];
    access::metadata_is_returned_for_existing_resources_only, "SPEC 5.10", [Resources, Metadata];
    membership::add_users_is_idempotent_per_user, "SPEC 5.11", [Resources, Membership];
    membership::remove_users_is_idempotent_per_user, "SPEC 5.11", [Resources, Membership];
    membership::list_resource_users_reports_missing_resources, "SPEC 5.11", [Resources, Membership];
    membership::the_full_listing_agrees_with_get_resource, "SPEC 5.11", [Resources, Membership];
    membership::membership_calls_validate_their_input, "SPEC 7.1", [Resources, Membership];
    membership::home_directories_are_created_once, "SPEC 5.12", [HomeDirectories];
    membership::role_reconciliation_is_idempotent, "SPEC 5.13", [Resources, Membership, RoleReconciliation];
    usage::usage_totals_equal_the_sum_of_users, "SPEC 5.14", [Resources, Membership, UsageReport];
    usage::usage_report_validates_its_input, "SPEC 7.1", [UsageReport];
    usage::historical_usage_reports_a_past_month, "SPEC 5.14", [Resources, Membership, HistoricalUsage];
    usernames::generated_usernames_are_stable, "SPEC 5.15", [Usernames];
    usernames::user_action_required_errors_carry_comment_and_url, "SPEC 5.15", [Usernames];
    orders::order_evaluation_is_deterministic, "SPEC 5.16", [OrderEvaluation];
    watch::slow_create_completes_when_re_issued_and_is_announced_on_watch, "SPEC 6.3", [Resources, SlowProvisioning, Watch];
    watch::watch_stream_opens_and_filters_by_resource, "SPEC 6.4", [Watch];
    diagnostics::diagnostics_report_at_least_one_check, "SPEC 4.5", [Diagnostics];
    diagnostics::periodic_settings_are_idempotent, "SPEC 5.17", [Resources, PeriodicSettings];
}
