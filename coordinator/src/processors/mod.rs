//! The work itself, one module per task of the original agent: each reads
//! Waldur through `waldur-client`, decides, and acts through the backend
//! client. They know nothing of how they are scheduled (the runtime) or
//! where requests come from (the upstream adapters).
//!
//! * [`orders`]: order processing;
//! * [`membership`]: membership sync, planned, checked by the blast-radius
//!   breaker, applied;
//! * [`placement`]: allocations follow their project and customer in the
//!   backend's tree;
//! * [`report`]: usage reporting;
//! * [`usernames`]: offering users and their usernames;
//! * [`team`]: who should be on a resource (shared by orders and
//!   membership);
//! * [`identity`]: the agent identity, service and processor registration;
//! * [`step`]: how a step fails, and which failures wait for the next
//!   cycle (one rule for all of them).

pub mod identity;
pub mod membership;
pub mod orders;
pub mod placement;
pub mod report;
pub mod step;
pub mod team;
pub mod usernames;
