//! The policy engine: [`CompiledPolicy::compile`] turns a tenant's IMPolicy specs into one
//! immutable compiled policy, and [`CompiledPolicy::evaluate`] turns an [`Event`] into a
//! [`Verdict`].
//!
//! Invariants:
//! - no I/O, no clocks: time is the event's timestamp, so the same events in the same order
//!   give the same verdicts;
//! - the compiled policy is immutable and `Send + Sync`, shared by every session of a
//!   tenant; the only mutable state is the tenant's [`PolicyState`];
//! - no input text, however hostile, makes evaluation panic, and every span in a verdict
//!   lies on character boundaries of the text it refers to;
//! - the precedence between policies is the one documented in [`evaluate`](self::evaluate)
//!   and in `docs/policy.md`.
//!
//! [`Event`]: crate::inspect::event::Event

mod compile;
pub mod detectors;
mod evaluate;
pub mod keywords;
pub mod normalize;
pub mod patterns;
mod subjects;
pub mod tracker;
pub mod urls;
pub mod verdict;
mod visible;

#[cfg(test)]
mod tests;

pub use compile::{
    CompileError, CompiledPolicy, DEFAULT_QUARANTINE_MS, Diagnostic, MAX_POLICIES, SECTION_RULES,
};
pub use evaluate::PolicyState;
pub use verdict::{Action, Alert, Disclaimer, REDACTION_MARK, RuleMatch, Span, Verdict};
