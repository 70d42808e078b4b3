//! `imgate policy`: the GitOps user's tools — lint, test and explain policies before they
//! are applied.

pub mod event_spec;
pub mod explain;
pub mod lint;
pub mod test_cases;
