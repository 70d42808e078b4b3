//! IRC, as a pure streaming parser: lines out of a byte stream ([`next_line`], with the
//! consumed/needed contract), messages out of lines ([`Message::parse`], RFC 1459/2812 with
//! IRCv3 message tags), the events policy cares about out of messages ([`Message::event`]),
//! and messages back into bytes ([`Message::to_line`]) after a rule changed them.
//!
//! Invariants: no line longer than [`MAX_LINE`] is buffered (an oversized line is reported
//! and skipped, never truncated into a different message); parsing borrows from the input
//! and never panics; `parse` then `to_line` gives back an equivalent line.

/// The longest line accepted: 8,191 bytes of IRCv3 tags plus 512 of message.
pub const MAX_LINE: usize = 8191 + 512;

/// What the framer found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line (without its line ending) and the bytes it used.
    Line {
        /// The line.
        line: &'a [u8],
        /// Bytes consumed, including the line ending.
        consumed: usize,
    },
    /// No complete line yet: read more.
    NeedMore,
    /// A line longer than [`MAX_LINE`]: drop `consumed` bytes (the line so far) and tell the
    /// sender.
    Oversized {
        /// Bytes to drop.
        consumed: usize,
    },
}

/// Finds the next line in `buffer`.
pub fn next_line(buffer: &[u8]) -> Frame<'_> {
    let window = &buffer[..buffer.len().min(MAX_LINE + 2)];
    match window.iter().position(|b| *b == b'\n') {
        Some(end) => {
            let line = &buffer[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Frame::Line {
                line,
                consumed: end + 1,
            }
        }
        None if buffer.len() > MAX_LINE => Frame::Oversized {
            consumed: buffer.len(),
        },
        None => Frame::NeedMore,
    }
}

/// One IRC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// IRCv3 tags, without the leading `@`.
    pub tags: Option<&'a [u8]>,
    /// The source (`nick!user@host`), without the leading `:`.
    pub source: Option<&'a [u8]>,
    /// The command (`PRIVMSG`, `001`).
    pub command: &'a [u8],
    /// The parameters, the trailing one included.
    pub params: Vec<&'a [u8]>,
}

/// Why a line is not an IRC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IrcError {
    /// Nothing but tags and a source.
    #[error("the line has no command")]
    NoCommand,
}

/// A DCC offer inside a CTCP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DccOffer {
    /// `SEND` or `CHAT` (upper-case).
    pub kind: String,
    /// The file name, for `SEND`.
    pub file: Option<String>,
    /// The offered address as given (an IPv4 address as a decimal number, or an IPv6 text).
    pub address: String,
    /// The port.
    pub port: Option<u16>,
    /// The file size, for `SEND`.
    pub size: Option<u64>,
}

/// What a message means for policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IrcEvent {
    /// Capability negotiation (`CAP LS`, `CAP REQ :sasl`).
    Cap {
        /// The subcommand.
        subcommand: String,
        /// Its arguments.
        arguments: Vec<String>,
    },
    /// `NICK`.
    Nick(String),
    /// `USER` registration.
    User {
        /// The user name.
        user: String,
        /// The real name.
        realname: String,
    },
    /// `PRIVMSG` or `NOTICE` text to a person or channel.
    Text {
        /// `PRIVMSG` (false) or `NOTICE` (true).
        notice: bool,
        /// Recipients (people or channels).
        targets: Vec<String>,
        /// The text (for a CTCP ACTION, the action without the wrapper).
        text: String,
        /// A CTCP ACTION (`/me`).
        action: bool,
    },
    /// A DCC offer.
    Dcc {
        /// Recipients.
        targets: Vec<String>,
        /// The offer.
        offer: DccOffer,
    },
    /// Another CTCP request (VERSION, PING, ...).
    Ctcp {
        /// Recipients.
        targets: Vec<String>,
        /// The request.
        request: String,
    },
    /// `JOIN` channels.
    Join(Vec<String>),
    /// `PART` channels.
    Part(Vec<String>),
    /// `TOPIC` of a channel, set when `topic` is given.
    Topic {
        /// The channel.
        channel: String,
        /// The new topic.
        topic: Option<String>,
    },
    /// Anything else (PING, QUIT, numerics, ...).
    Other,
}

impl Message<'_> {
    /// The bytes of a PRIVMSG's or NOTICE's text as sent (a CTCP ACTION's without its
    /// wrapper), when they are not UTF-8: what [`IrcEvent::Text`] could only read with
    /// U+FFFD in their place.
    pub fn unreadable_text(&self) -> Option<&[u8]> {
        let body = self.params.get(1).copied()?;
        let body = match body.strip_prefix(b"\x01ACTION ") {
            Some(action) => action.strip_suffix(b"\x01").unwrap_or(action),
            None => body,
        };
        std::str::from_utf8(body).is_err().then_some(body)
    }

    /// The value of IRCv3 tag `name` (unescaped), when the message carries it with one.
    pub fn tag(&self, name: &str) -> Option<String> {
        self.tags?.split(|b| *b == b';').find_map(|tag| {
            let (key, value) = match tag.iter().position(|b| *b == b'=') {
                Some(at) => (&tag[..at], &tag[at + 1..]),
                None => (tag, &b""[..]),
            };
            (key == name.as_bytes() && !value.is_empty()).then(|| unescape_tag(value))
        })
    }
}

/// A tag value with IRCv3's escapes (`\:` `\s` `\\` `\r` `\n`) undone.
fn unescape_tag(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b':') => out.push(b';'),
            Some(b's') => out.push(b' '),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(&other) => out.push(other),
            None => {}
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn list(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == b',')
        .filter(|t| !t.is_empty())
        .map(text)
        .collect()
}

impl<'a> Message<'a> {
    /// Parses one line (without its line ending).
    pub fn parse(line: &'a [u8]) -> Result<Self, IrcError> {
        let mut rest = line;
        let word = |rest: &mut &'a [u8]| -> &'a [u8] {
            let end = rest.iter().position(|b| *b == b' ').unwrap_or(rest.len());
            let (word, tail) = rest.split_at(end);
            *rest = trim_spaces(tail);
            word
        };
        rest = trim_spaces(rest);
        let tags = if rest.first() == Some(&b'@') {
            Some(&word(&mut rest)[1..])
        } else {
            None
        };
        let source = if rest.first() == Some(&b':') {
            Some(&word(&mut rest)[1..])
        } else {
            None
        };
        let command = word(&mut rest);
        if command.is_empty() {
            return Err(IrcError::NoCommand);
        }
        let mut params = Vec::new();
        while !rest.is_empty() {
            if rest[0] == b':' {
                params.push(&rest[1..]);
                break;
            }
            params.push(word(&mut rest));
        }
        Ok(Self {
            tags,
            source,
            command,
            params,
        })
    }

    /// The line for this message (without its line ending); the last parameter is written as
    /// a trailing parameter when it needs to be.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        if let Some(tags) = self.tags {
            out.push(b'@');
            out.extend_from_slice(tags);
            out.push(b' ');
        }
        if let Some(source) = self.source {
            out.push(b':');
            out.extend_from_slice(source);
            out.push(b' ');
        }
        out.extend_from_slice(self.command);
        for (index, param) in self.params.iter().enumerate() {
            out.push(b' ');
            let last = index + 1 == self.params.len();
            if last && (param.is_empty() || param.contains(&b' ') || param.starts_with(b":")) {
                out.push(b':');
            }
            out.extend_from_slice(param);
        }
        out
    }

    /// What the message means for policy.
    pub fn event(&self) -> IrcEvent {
        let command = self.command.to_ascii_uppercase();
        let param = |i: usize| self.params.get(i).copied().unwrap_or_default();
        match command.as_slice() {
            b"CAP" => {
                // Client form: CAP <sub> [args]; server form: CAP <target> <sub> [args].
                let sub_at = usize::from(
                    self.params.len() > 2 || (self.params.len() == 2 && param(0) == b"*"),
                );
                IrcEvent::Cap {
                    subcommand: text(param(sub_at)).to_ascii_uppercase(),
                    arguments: param(sub_at + 1)
                        .split(|b| *b == b' ')
                        .filter(|a| !a.is_empty())
                        .map(text)
                        .collect(),
                }
            }
            b"NICK" => IrcEvent::Nick(text(param(0))),
            b"USER" => IrcEvent::User {
                user: text(param(0)),
                realname: text(self.params.last().copied().unwrap_or_default()),
            },
            b"PRIVMSG" | b"NOTICE" => self.text_event(command.as_slice() == b"NOTICE"),
            b"JOIN" => IrcEvent::Join(list(param(0))),
            b"PART" => IrcEvent::Part(list(param(0))),
            b"TOPIC" => IrcEvent::Topic {
                channel: text(param(0)),
                topic: self.params.get(1).map(|t| text(t)),
            },
            _ => IrcEvent::Other,
        }
    }

    fn text_event(&self, notice: bool) -> IrcEvent {
        let targets = list(self.params.first().copied().unwrap_or_default());
        let body = self.params.get(1).copied().unwrap_or_default();
        let Some(ctcp) = body.strip_prefix(b"\x01") else {
            return IrcEvent::Text {
                notice,
                targets,
                text: text(body),
                action: false,
            };
        };
        let ctcp = ctcp.strip_suffix(b"\x01").unwrap_or(ctcp);
        let (verb, args) =
            ctcp.split_at(ctcp.iter().position(|b| *b == b' ').unwrap_or(ctcp.len()));
        let args = trim_spaces(args);
        match verb.to_ascii_uppercase().as_slice() {
            b"ACTION" => IrcEvent::Text {
                notice,
                targets,
                text: text(args),
                action: true,
            },
            b"DCC" => match parse_dcc(args) {
                Some(offer) => IrcEvent::Dcc { targets, offer },
                None => IrcEvent::Ctcp {
                    targets,
                    request: text(ctcp),
                },
            },
            _ => IrcEvent::Ctcp {
                targets,
                request: text(ctcp),
            },
        }
    }
}

/// A PRIVMSG or NOTICE line like `original` with its text replaced (a CTCP ACTION stays
/// one); any other message is returned unchanged.
pub fn with_text(original: &Message<'_>, new_text: &str) -> Vec<u8> {
    let IrcEvent::Text { action, .. } = original.event() else {
        return original.to_line();
    };
    let body = if action {
        format!("\x01ACTION {new_text}\x01")
    } else {
        new_text.to_owned()
    };
    let mut message = original.clone();
    if message.params.len() >= 2 {
        message.params[1] = body.as_bytes();
    } else {
        message.params.push(body.as_bytes());
    }
    message.to_line()
}

fn trim_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != b' ').unwrap_or(bytes.len());
    &bytes[start..]
}

/// `SEND <file> <address> <port> [size]` or `CHAT chat <address> <port>`; file names may be
/// quoted.
fn parse_dcc(args: &[u8]) -> Option<DccOffer> {
    let args = String::from_utf8_lossy(args);
    let (kind, rest) = args.split_once(' ')?;
    let kind = kind.to_ascii_uppercase();
    let rest = rest.trim_start();
    let (name, rest) = match rest.strip_prefix('"') {
        Some(quoted) => {
            let end = quoted.find('"')?;
            (quoted[..end].to_owned(), quoted[end + 1..].trim_start())
        }
        None => {
            let (name, rest) = rest.split_once(' ')?;
            (name.to_owned(), rest)
        }
    };
    let mut fields = rest.split_whitespace();
    let address = fields.next()?.to_owned();
    let port = fields.next().and_then(|p| p.parse().ok());
    let size = fields.next().and_then(|s| s.parse().ok());
    match kind.as_str() {
        "SEND" => Some(DccOffer {
            kind,
            file: Some(name),
            address,
            port,
            size,
        }),
        "CHAT" => Some(DccOffer {
            kind,
            file: None,
            address,
            port,
            size: None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn event(line: &str) -> IrcEvent {
        Message::parse(line.as_bytes()).expect("parses").event()
    }

    #[test]
    fn a_tags_value_is_read_unescaped_and_an_empty_or_missing_one_is_none() {
        let line = r"@time=2026-11-22T08:00:00Z;msgid=a\:b\sc\d;+draft/reply :jane!j@host PRIVMSG #desk :hi";
        let message = Message::parse(line.as_bytes()).expect("parses");
        // `\d` is no escape: its backslash goes.
        assert_eq!(message.tag("msgid").as_deref(), Some("a;b cd"));
        assert_eq!(message.tag("+draft/reply"), None, "a tag without a value");
        assert_eq!(message.tag("label"), None);
        let plain = Message::parse(b":jane!j@host PRIVMSG #desk :hi").expect("parses");
        assert_eq!(plain.tag("msgid"), None);
    }

    #[test]
    fn frames_lines_with_consumed_and_needed() {
        assert_eq!(
            next_line(b"NICK jane\r\nUSER"),
            Frame::Line {
                line: b"NICK jane",
                consumed: 11
            }
        );
        assert_eq!(
            next_line(b"PING x\nrest"),
            Frame::Line {
                line: b"PING x",
                consumed: 7
            }
        );
        assert_eq!(next_line(b"USER jane 0 *"), Frame::NeedMore);
        assert_eq!(
            next_line(&vec![b'a'; MAX_LINE + 1]),
            Frame::Oversized {
                consumed: MAX_LINE + 1
            }
        );
    }

    #[test]
    fn parses_registration_and_capabilities() {
        assert_eq!(
            event("CAP LS 302"),
            IrcEvent::Cap {
                subcommand: "LS".into(),
                arguments: vec!["302".into()]
            }
        );
        assert_eq!(
            event("CAP REQ :sasl message-tags"),
            IrcEvent::Cap {
                subcommand: "REQ".into(),
                arguments: vec!["sasl".into(), "message-tags".into()]
            }
        );
        assert_eq!(
            event(":irc.test CAP * ACK :sasl"),
            IrcEvent::Cap {
                subcommand: "ACK".into(),
                arguments: vec!["sasl".into()]
            }
        );
        assert_eq!(
            event("NICK surferdood124"),
            IrcEvent::Nick("surferdood124".into())
        );
        assert_eq!(
            event("USER jane 0 * :Jane Doe"),
            IrcEvent::User {
                user: "jane".into(),
                realname: "Jane Doe".into()
            }
        );
    }

    #[test]
    fn parses_messages_actions_and_dcc() {
        assert_eq!(
            event(
                "@time=2026-11-22T08:00:00Z :jane!j@host PRIVMSG #desk,bob :project falcon is go"
            ),
            IrcEvent::Text {
                notice: false,
                targets: vec!["#desk".into(), "bob".into()],
                text: "project falcon is go".into(),
                action: false
            }
        );
        assert_eq!(
            event("NOTICE bob :hi"),
            IrcEvent::Text {
                notice: true,
                targets: vec!["bob".into()],
                text: "hi".into(),
                action: false
            }
        );
        assert_eq!(
            event("PRIVMSG #desk :\x01ACTION waves\x01"),
            IrcEvent::Text {
                notice: false,
                targets: vec!["#desk".into()],
                text: "waves".into(),
                action: true
            }
        );
        assert_eq!(
            event("PRIVMSG bob :\x01DCC SEND \"q3 report.xlsx\" 3232235777 5000 48213\x01"),
            IrcEvent::Dcc {
                targets: vec!["bob".into()],
                offer: DccOffer {
                    kind: "SEND".into(),
                    file: Some("q3 report.xlsx".into()),
                    address: "3232235777".into(),
                    port: Some(5000),
                    size: Some(48213)
                }
            }
        );
        assert_eq!(
            event("PRIVMSG bob :\x01DCC CHAT chat 3232235777 5001\x01"),
            IrcEvent::Dcc {
                targets: vec!["bob".into()],
                offer: DccOffer {
                    kind: "CHAT".into(),
                    file: None,
                    address: "3232235777".into(),
                    port: Some(5001),
                    size: None
                }
            }
        );
        assert_eq!(
            event("PRIVMSG bob :\x01VERSION\x01"),
            IrcEvent::Ctcp {
                targets: vec!["bob".into()],
                request: "VERSION".into()
            }
        );
        assert_eq!(
            event("JOIN #desk,#ops"),
            IrcEvent::Join(vec!["#desk".into(), "#ops".into()])
        );
        assert_eq!(event("PART #ops :bye"), IrcEvent::Part(vec!["#ops".into()]));
        assert_eq!(
            event("TOPIC #desk :Q3 numbers"),
            IrcEvent::Topic {
                channel: "#desk".into(),
                topic: Some("Q3 numbers".into())
            }
        );
        assert_eq!(event("PING :irc.test"), IrcEvent::Other);
        assert_eq!(
            Message::parse(b"@a=b :src").err(),
            Some(IrcError::NoCommand)
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_given_as_sent() {
        let message = Message::parse(b"PRIVMSG #desk :caf\xe9 ol\xe9").expect("parses");
        assert_eq!(message.unreadable_text(), Some(&b"caf\xe9 ol\xe9"[..]));
        let action = Message::parse(b"PRIVMSG #desk :\x01ACTION caf\xe9\x01").expect("parses");
        assert_eq!(action.unreadable_text(), Some(&b"caf\xe9"[..]));
        let plain = Message::parse("PRIVMSG #desk :café".as_bytes()).expect("parses");
        assert_eq!(plain.unreadable_text(), None);
    }

    #[test]
    fn rewrites_text_keeping_the_rest() {
        let original =
            Message::parse(b"@label=1 :jane!j@h PRIVMSG #desk :card 4111 1111 1111 1111")
                .expect("parses");
        assert_eq!(
            with_text(&original, "card ████"),
            "@label=1 :jane!j@h PRIVMSG #desk :card ████".as_bytes()
        );
        let action = Message::parse(b"PRIVMSG #desk :\x01ACTION sends 4111\x01").expect("parses");
        assert_eq!(
            with_text(&action, "sends ████"),
            "PRIVMSG #desk :\x01ACTION sends ████\x01".as_bytes()
        );
        let join = Message::parse(b"JOIN #desk").expect("parses");
        assert_eq!(with_text(&join, "x"), b"JOIN #desk".to_vec());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(line in proptest::collection::vec(any::<u8>().prop_filter("no line ends", |b| *b != b'\n' && *b != b'\r'), 0..300)) {
            if let Ok(message) = Message::parse(&line) {
                let again = message.to_line();
                let reparsed = Message::parse(&again).expect("what we write parses");
                prop_assert_eq!(reparsed.command, message.command);
                prop_assert_eq!(&reparsed.params, &message.params);
                let _ = message.event();
            }
        }

        #[test]
        fn framing_never_panics_and_stays_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..20_000)) {
            let mut rest = &bytes[..];
            loop {
                match next_line(rest) {
                    Frame::Line { line, consumed } => {
                        prop_assert!(line.len() <= MAX_LINE + 1 && consumed <= rest.len() && consumed > 0);
                        rest = &rest[consumed..];
                    }
                    Frame::Oversized { consumed } => {
                        prop_assert!(consumed > MAX_LINE);
                        rest = &rest[consumed..];
                    }
                    Frame::NeedMore => {
                        prop_assert!(rest.len() <= MAX_LINE);
                        break;
                    }
                }
            }
        }
    }
}
