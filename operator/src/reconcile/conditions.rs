//! Status conditions as the Kubernetes API conventions define them (`metav1.Condition`).
//!
//! Invariants: [`merge`] keeps a condition's `lastTransitionTime` unless its `status` changes,
//! so a status written again with nothing new is equal to the one already stored and needs no
//! write; every condition carries the generation it describes; conditions come out in the
//! order they were asked for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// It is not known yet.
    Unknown,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::True => "True",
            State::False => "False",
            State::Unknown => "Unknown",
        }
    }
}

/// One condition as the operator wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// `Ready`, `TunnelReady`, ...
    pub type_: &'static str,
    /// Whether it holds.
    pub state: State,
    /// A `PascalCase` reason.
    pub reason: &'static str,
    /// What a person should know, and what to do.
    pub message: String,
}

impl Wanted {
    /// A condition `type_` in `state` for `reason`, saying `message`.
    pub fn new(type_: &'static str, state: State, reason: &'static str, message: String) -> Self {
        Self {
            type_,
            state,
            reason,
            message,
        }
    }
}

/// The conditions `wanted`, for `generation`, keeping each one's transition time from
/// `previous` when its status is unchanged, and stamping `now` otherwise.
pub fn merge(
    previous: &[Condition],
    wanted: Vec<Wanted>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    wanted
        .into_iter()
        .map(|w| {
            let status = w.state.as_str();
            let since = previous
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: w.type_.into(),
                status: status.into(),
                reason: w.reason.into(),
                message: w.message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// The condition `type_` among `conditions`.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("a valid time"))
    }

    fn ready(state: State) -> Vec<Wanted> {
        vec![Wanted::new("Ready", state, "Why", "because".into())]
    }

    #[test]
    fn a_transition_time_moves_only_when_the_status_changes() {
        let first = merge(&[], ready(State::False), Some(1), &at(100));
        assert_eq!(first[0].last_transition_time, at(100));
        assert_eq!(first[0].observed_generation, Some(1));

        let again = merge(&first, ready(State::False), Some(1), &at(200));
        assert_eq!(again, first, "nothing new: equal, so no write is needed");

        let changed = merge(&again, ready(State::True), Some(2), &at(300));
        assert_eq!(changed[0].status, "True");
        assert_eq!(changed[0].last_transition_time, at(300));
        assert_eq!(changed[0].observed_generation, Some(2));
    }

    #[test]
    fn conditions_keep_the_order_asked_for() {
        let wanted = vec![
            Wanted::new("Ready", State::Unknown, "A", String::new()),
            Wanted::new("TunnelReady", State::True, "B", String::new()),
        ];
        let merged = merge(&[], wanted, None, &at(1));
        let types: Vec<_> = merged.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "TunnelReady"]);
        assert_eq!(merged[0].status, "Unknown");
        assert!(find(&merged, "TunnelReady").is_some());
        assert!(find(&merged, "PolicyApplied").is_none());
    }
}
