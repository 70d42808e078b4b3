//! Events: what the protocol parsers produce from a conversation, and what the policy engine
//! evaluates. One event is one session start, message, file offer or use of a protocol feature.

pub use imgate_crds::policy::{Direction, Feature, Protocol};

/// One thing that happened in an IM session.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The tenant the session belongs to.
    pub tenant: String,
    /// The protocol identified on the connection.
    pub protocol: Protocol,
    /// A catalogue service recognised by TLS server name (`slack`, `teams`, ...).
    pub service: Option<String>,
    /// Which way the event travels.
    pub direction: Direction,
    /// Who sent it.
    pub sender: Party,
    /// Handles it is addressed to (empty for a room message).
    pub recipients: Vec<String>,
    /// The room, for group conversations.
    pub room: Option<String>,
    /// One-to-one or group.
    pub conversation: ConversationKind,
    /// What it carries.
    pub content: Content,
    /// URLs the parser found outside the text (out-of-band links, upload slots).
    pub urls: Vec<String>,
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A participant: the handle seen on the wire and who the directory says it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Party {
    /// The protocol handle (`surferdood124@chat.example`, an IRC nick).
    pub handle: String,
    /// The person, when identity resolution found one.
    pub person: Option<String>,
    /// The person's directory groups.
    pub groups: Vec<String>,
}

/// One-to-one or group conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConversationKind {
    /// Two parties.
    #[default]
    Direct,
    /// A room or channel.
    Group,
}

/// What an event carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A new session (connection) is being set up.
    Session,
    /// A message.
    Message {
        /// Its text.
        text: String,
    },
    /// An offer to transfer a file.
    File(FileOffer),
    /// Use of a protocol feature (joining a group chat, starting a call).
    Feature(Feature),
}

/// A file-transfer offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOffer {
    /// The file name as offered.
    pub name: String,
    /// Its size in bytes, when announced.
    pub size: Option<u64>,
    /// Its SHA-256, hex, when announced or computed.
    pub sha256: Option<String>,
}

impl Event {
    /// The message text, when the event is a message.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Message { text } => Some(text),
            _ => None,
        }
    }
}
