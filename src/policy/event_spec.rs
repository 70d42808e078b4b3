//! Events as users write them in test cases and on the `explain` command line, and their
//! conversion into the engine's [`Event`]. Fields left out take the file's `defaults`, then
//! the values below.

use imgate_crds::policy::{Direction, Feature, Protocol};
use imgate_dataplane::inspect::event::{Content, ConversationKind, Event, FileOffer, Party};
use serde::Deserialize;

/// The time of the first event when none is given: 2024-01-01T00:00:00Z.
pub const DEFAULT_START_MS: u64 = 1_704_067_200_000;
/// Time between events that give no time.
pub const DEFAULT_STEP_MS: u64 = 1_000;

/// An event, every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSpec {
    /// `xmpp` when absent.
    pub protocol: Option<Protocol>,
    /// A catalogue service (`slack`, ...).
    pub service: Option<String>,
    /// `outbound` when absent.
    pub direction: Option<Direction>,
    /// The sender.
    pub sender: Option<PartySpec>,
    /// Recipients' handles.
    pub recipients: Option<Vec<String>>,
    /// The room, for group conversations.
    pub room: Option<String>,
    /// A message with this text.
    pub text: Option<String>,
    /// A file offer.
    pub file: Option<FileSpec>,
    /// Use of a protocol feature.
    pub feature: Option<Feature>,
    /// A session start.
    pub session: Option<bool>,
    /// Out-of-band URLs.
    pub urls: Option<Vec<String>>,
    /// Milliseconds since the Unix epoch.
    pub at: Option<u64>,
}

/// A sender.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartySpec {
    /// The handle.
    pub handle: Option<String>,
    /// The person.
    pub person: Option<String>,
    /// Their groups.
    pub groups: Option<Vec<String>>,
}

/// A file offer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: Option<u64>,
    /// SHA-256, hex.
    pub sha256: Option<String>,
}

/// Why an event spec cannot become an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventSpecError {
    /// More than one of text, file, feature, session.
    #[error("an event carries exactly one of text, file, feature or session: true")]
    Content,
}

impl EventSpec {
    /// This spec with the blanks filled from `defaults`.
    pub fn or(self, defaults: &EventSpec) -> EventSpec {
        let sender = match (self.sender, &defaults.sender) {
            (Some(s), Some(d)) => Some(PartySpec {
                handle: s.handle.or_else(|| d.handle.clone()),
                person: s.person.or_else(|| d.person.clone()),
                groups: s.groups.or_else(|| d.groups.clone()),
            }),
            (s, d) => s.or_else(|| d.clone()),
        };
        EventSpec {
            protocol: self.protocol.or(defaults.protocol),
            service: self.service.or_else(|| defaults.service.clone()),
            direction: self.direction.or(defaults.direction),
            sender,
            recipients: self.recipients.or_else(|| defaults.recipients.clone()),
            room: self.room.or_else(|| defaults.room.clone()),
            text: self.text,
            file: self.file,
            feature: self.feature,
            session: self.session,
            urls: self.urls.or_else(|| defaults.urls.clone()),
            at: self.at,
        }
    }

    /// The engine event for `tenant`, at `at_ms` unless the spec gives a time.
    pub fn to_event(&self, tenant: &str, at_ms: u64) -> Result<Event, EventSpecError> {
        let kinds = [
            self.text.is_some(),
            self.file.is_some(),
            self.feature.is_some(),
            self.session == Some(true),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(EventSpecError::Content);
        }
        let content = if let Some(file) = &self.file {
            Content::File(FileOffer {
                name: file.name.clone(),
                size: file.size,
                sha256: file.sha256.clone(),
            })
        } else if let Some(feature) = self.feature {
            Content::Feature(feature)
        } else if self.session == Some(true) {
            Content::Session
        } else {
            Content::Message {
                text: self.text.clone().unwrap_or_default(),
            }
        };
        let sender = self.sender.clone().unwrap_or_default();
        Ok(Event {
            tenant: tenant.to_owned(),
            protocol: self.protocol.unwrap_or(Protocol::Xmpp),
            service: self.service.clone(),
            direction: self.direction.unwrap_or(Direction::Outbound),
            sender: Party {
                handle: sender.handle.unwrap_or_else(|| "user@chat.example".into()),
                person: sender.person,
                groups: sender.groups.unwrap_or_default(),
            },
            recipients: self.recipients.clone().unwrap_or_default(),
            conversation: if self.room.is_some() {
                ConversationKind::Group
            } else {
                ConversationKind::Direct
            },
            room: self.room.clone(),
            content,
            urls: self.urls.clone().unwrap_or_default(),
            at_ms: self.at.unwrap_or(at_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_blanks_only() {
        let defaults = EventSpec {
            protocol: Some(Protocol::Irc),
            sender: Some(PartySpec {
                handle: Some("a".into()),
                person: Some("p".into()),
                groups: None,
            }),
            ..EventSpec::default()
        };
        let spec = EventSpec {
            sender: Some(PartySpec {
                handle: Some("b".into()),
                ..PartySpec::default()
            }),
            text: Some("hi".into()),
            ..EventSpec::default()
        };
        let event = spec.or(&defaults).to_event("acme", 5).expect("valid");
        assert_eq!(
            (
                event.protocol,
                event.sender.handle.as_str(),
                event.sender.person.as_deref()
            ),
            (Protocol::Irc, "b", Some("p"))
        );
        assert_eq!(event.at_ms, 5);
        assert_eq!(event.text(), Some("hi"));
    }

    #[test]
    fn one_kind_of_content() {
        let spec = EventSpec {
            text: Some("x".into()),
            session: Some(true),
            ..EventSpec::default()
        };
        assert_eq!(spec.to_event("acme", 0), Err(EventSpecError::Content));
    }
}
