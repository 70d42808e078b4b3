//! Which messages are already archived, so that an XMPP carbon copy (XEP-0280) of a message
//! is archived once: a person with two clients behind the dataplane gets each message on
//! both (one as a carbon), and a message they send from one is carbon-copied to the other.
//!
//! A message is known by its sender, recipient, stanza id and text. A carbon whose message is
//! known is not archived again; a carbon whose message is not known (its original went
//! through no session of this dataplane) is archived, and then a later direct copy of it is
//! not. Two direct copies (the sender's session and the recipient's) are each archived, as
//! they are two sessions' views.
//!
//! Invariants: at most [`CAPACITY`] messages are remembered, the oldest forgotten first; a
//! message without a stanza id is never taken for another; the text is part of the key, so
//! reusing an id for new text cannot keep that text out of the archive.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

/// How many messages are remembered.
pub const CAPACITY: usize = 16_384;

/// A message, as carbons and direct copies name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageCopy<'a> {
    /// The sender's bare address.
    pub from: &'a str,
    /// The recipient's bare address.
    pub to: &'a str,
    /// The stanza id.
    pub id: &'a str,
    /// The text.
    pub text: &'a str,
}

#[derive(Default)]
struct Seen {
    /// Key to whether it was archived from a carbon.
    archived: HashMap<u64, bool>,
    order: VecDeque<u64>,
}

/// Messages archived recently, shared by a dataplane's sessions.
#[derive(Default)]
pub struct Copies {
    hasher: RandomState,
    seen: Mutex<Seen>,
}

impl Copies {
    /// Whether this copy of a message is to be archived; `carbon` says whether it is a carbon
    /// copy. Remembers the message either way.
    pub fn first(&self, message: Option<MessageCopy<'_>>, carbon: bool) -> bool {
        let Some(message) = message.filter(|m| !m.id.is_empty()) else {
            return true;
        };
        let key = self.hasher.hash_one((
            message.from.to_lowercase(),
            message.to.to_lowercase(),
            message.id,
            message.text,
        ));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.archived.get(&key).copied() {
            Some(_) if carbon => false,
            Some(true) => false,
            Some(false) => true,
            None => {
                if seen.order.len() == CAPACITY
                    && let Some(oldest) = seen.order.pop_front()
                {
                    seen.archived.remove(&oldest);
                }
                seen.order.push_back(key);
                seen.archived.insert(key, carbon);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<'a>(id: &'a str, text: &'a str) -> Option<MessageCopy<'a>> {
        Some(MessageCopy {
            from: "jane@chat.example",
            to: "bob@chat.example",
            id,
            text,
        })
    }

    #[test]
    fn a_carbon_of_an_archived_message_is_not_archived_again() {
        let copies = Copies::default();
        assert!(copies.first(message("m1", "hi"), false), "the original");
        assert!(!copies.first(message("m1", "hi"), true), "its carbon");
        assert!(!copies.first(message("m1", "hi"), true), "another carbon");
        assert!(
            copies.first(message("m1", "hi"), false),
            "the other side's direct copy"
        );
    }

    #[test]
    fn a_carbon_seen_first_is_archived_and_its_direct_copy_is_not() {
        let copies = Copies::default();
        assert!(copies.first(message("m2", "hi"), true));
        assert!(!copies.first(message("m2", "hi"), false));
    }

    #[test]
    fn new_text_or_no_id_is_always_archived() {
        let copies = Copies::default();
        assert!(copies.first(message("m3", "hi"), false));
        assert!(
            copies.first(message("m3", "something else"), true),
            "an id reused for other text"
        );
        assert!(copies.first(message("", "hi"), true));
        assert!(copies.first(message("", "hi"), true));
        assert!(copies.first(None, true));
    }

    #[test]
    fn addresses_compare_without_case() {
        let copies = Copies::default();
        assert!(copies.first(message("m4", "hi"), false));
        let shouted = MessageCopy {
            from: "Jane@Chat.Example",
            to: "BOB@chat.example",
            id: "m4",
            text: "hi",
        };
        assert!(!copies.first(Some(shouted), true));
    }

    #[test]
    fn the_oldest_messages_are_forgotten_beyond_capacity() {
        let copies = Copies::default();
        let ids: Vec<String> = (0..=CAPACITY).map(|i| format!("m{i}")).collect();
        for id in &ids {
            assert!(copies.first(message(id, "hi"), false));
        }
        assert!(
            copies.first(message(&ids[0], "hi"), true),
            "forgotten, so archived"
        );
        assert!(!copies.first(message(&ids[CAPACITY], "hi"), true));
    }
}
