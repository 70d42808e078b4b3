//! Warning Events: what the operator could not do, published on the object it concerns, so
//! that `kubectl describe` and `kubectl events` show it beside the condition that says it.
//!
//! Invariants: a note is cut to the API server's limit on a character boundary, never
//! refused for its length; a failure to publish is logged and never fails a reconcile (the
//! condition already says it).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::Context;

/// The longest Event note the API server accepts.
const MAX_NOTE: usize = 1024;

/// `text` cut to [`MAX_NOTE`] bytes, ending in `...` when cut.
fn note(mut text: String) -> String {
    if text.len() > MAX_NOTE {
        let mut end = MAX_NOTE - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// Publishes a Warning Event on `regarding` for `reason`, during `action`, saying `text`.
pub async fn publish(
    ctx: &Context,
    regarding: &ObjectReference,
    reason: &str,
    action: &str,
    text: String,
) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note(text)),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, regarding).await {
        tracing::warn!(
            object = regarding.name.as_deref().unwrap_or_default(),
            reason,
            %error,
            "could not publish a Warning event"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        assert_eq!(note("short".into()), "short");
        let long = "é".repeat(MAX_NOTE);
        let cut = note(long);
        assert!(cut.len() <= MAX_NOTE, "{}", cut.len());
        assert!(cut.ends_with("..."));
    }
}
