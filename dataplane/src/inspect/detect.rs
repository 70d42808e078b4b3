//! Protocol identification from the first bytes a client sends.
//!
//! [`detect`] is pure: given the bytes read so far it answers with a protocol, or asks for
//! more. The proxy peeks with a bound and a timeout and replays the bytes to whichever handler
//! takes over (see `proxy::peek`). Protocols where the server speaks first, and clients that
//! send nothing before the timeout, are `Unknown`.
//!
//! Invariants: never reads past [`MAX_PEEK`] bytes (a prefix that long without a verdict is
//! `Unknown`, except TLS, whose hello may run to [`tls_hello::MAX_HELLO`]); never panics.

use imgate_crds::policy::Protocol;

use super::tls_hello::{self, ClientHello, HelloRead};

/// Bytes inspected before giving up on everything but TLS.
pub const MAX_PEEK: usize = 2048;

/// What the first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// A TLS ClientHello (its server name, when readable).
    Tls(ClientHello),
    /// An XMPP client stream header.
    Xmpp,
    /// IRC registration (`CAP`, `NICK`, `USER`, `PASS`).
    Irc,
    /// An HTTP/1 request.
    Http,
    /// A SIP request or response.
    Sip,
    /// The BitTorrent handshake.
    Bittorrent,
    /// MSN Messenger (`VER … MSNP…`).
    Msnp,
    /// AOL/ICQ OSCAR (a FLAP sign-on frame).
    Oscar,
    /// Yahoo! Messenger (`YMSG`).
    Ymsg,
    /// None of the above.
    Unknown,
}

impl Detected {
    /// The protocol policy sees.
    pub fn protocol(&self) -> Protocol {
        match self {
            Detected::Tls(_) => Protocol::Tls,
            Detected::Xmpp => Protocol::Xmpp,
            Detected::Irc => Protocol::Irc,
            Detected::Http => Protocol::Http,
            Detected::Sip => Protocol::Sip,
            Detected::Bittorrent => Protocol::Bittorrent,
            Detected::Msnp => Protocol::Msnp,
            Detected::Oscar => Protocol::Oscar,
            Detected::Ymsg => Protocol::Ymsg,
            Detected::Unknown => Protocol::Unknown,
        }
    }
}

/// The answer for a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    /// Identified.
    Done(Detected),
    /// Could still become something: read more (if the peer sends it in time).
    NeedMore,
}

const BITTORRENT: &[u8] = b"\x13BitTorrent protocol";
const HTTP_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];
const SIP_METHODS: [&str; 14] = [
    "INVITE",
    "REGISTER",
    "MESSAGE",
    "OPTIONS",
    "ACK",
    "BYE",
    "CANCEL",
    "SUBSCRIBE",
    "NOTIFY",
    "INFO",
    "PUBLISH",
    "REFER",
    "PRACK",
    "UPDATE",
];
const IRC_COMMANDS: [&str; 4] = ["CAP", "NICK", "USER", "PASS"];

/// A recogniser: `Some(Done)` when it knows the prefix, `Some(NeedMore)` while the prefix could
/// still become its protocol, `None` when it cannot.
type Recogniser = fn(&[u8]) -> Option<Detection>;

/// Identifies the protocol of a connection from the bytes read so far.
pub fn detect(prefix: &[u8]) -> Detection {
    if prefix.is_empty() {
        return Detection::NeedMore;
    }
    if tls_hello::looks_like_tls(prefix) || (prefix.len() < 3 && prefix[0] == 0x16) {
        return match tls_hello::read_client_hello(prefix) {
            HelloRead::Hello(hello) => Detection::Done(Detected::Tls(hello)),
            HelloRead::NeedMore(_) if prefix.len() < tls_hello::MAX_HELLO + 5 => {
                Detection::NeedMore
            }
            _ => Detection::Done(Detected::Tls(ClientHello::default())),
        };
    }
    let candidates: [Recogniser; 6] = [bittorrent, oscar, ymsg, xmpp, text_line, irc_or_msnp];
    let mut undecided = false;
    for candidate in candidates {
        match candidate(prefix) {
            Some(Detection::Done(found)) => return Detection::Done(found),
            Some(Detection::NeedMore) => undecided = true,
            None => {}
        }
    }
    if undecided && prefix.len() < MAX_PEEK {
        Detection::NeedMore
    } else {
        Detection::Done(Detected::Unknown)
    }
}

/// `Some(Done)` when `prefix` starts with `magic`, `Some(NeedMore)` while it could.
fn magic(prefix: &[u8], magic: &[u8], found: Detected) -> Option<Detection> {
    let n = prefix.len().min(magic.len());
    if prefix[..n] != magic[..n] {
        None
    } else if prefix.len() >= magic.len() {
        Some(Detection::Done(found))
    } else {
        Some(Detection::NeedMore)
    }
}

fn bittorrent(prefix: &[u8]) -> Option<Detection> {
    magic(prefix, BITTORRENT, Detected::Bittorrent)
}

fn ymsg(prefix: &[u8]) -> Option<Detection> {
    magic(prefix, b"YMSG", Detected::Ymsg)
}

/// OSCAR: a FLAP frame `*`, channel 1 (sign-on), sequence, length, then FLAP version 1.
fn oscar(prefix: &[u8]) -> Option<Detection> {
    if prefix[0] != b'*' {
        return None;
    }
    if prefix.len() < 10 {
        return (prefix.len() < 2 || prefix[1] == 1).then_some(Detection::NeedMore);
    }
    (prefix[1] == 1 && prefix[6..10] == [0, 0, 0, 1]).then_some(Detection::Done(Detected::Oscar))
}

/// XMPP: optional white space and XML declaration, then `<stream:stream` (or a `stream`
/// element in the jabber:client namespace).
fn xmpp(prefix: &[u8]) -> Option<Detection> {
    let text = String::from_utf8_lossy(prefix);
    let blank = ['\u{feff}', ' ', '\t', '\r', '\n'];
    let mut rest = text.trim_start_matches(blank);
    if rest.starts_with("<?xml") {
        let Some(end) = rest.find("?>") else {
            return Some(Detection::NeedMore);
        };
        rest = rest[end + 2..].trim_start_matches(blank);
    } else if !rest.is_empty() && "<?xml".starts_with(rest) {
        return Some(Detection::NeedMore);
    }
    if rest.is_empty() {
        return Some(Detection::NeedMore);
    }
    for head in ["<stream:stream", "<stream "] {
        if rest.starts_with(head) {
            return Some(Detection::Done(Detected::Xmpp));
        }
        if head.starts_with(rest) {
            return Some(Detection::NeedMore);
        }
    }
    None
}

/// The first line of HTTP/1 and SIP: `METHOD target VERSION`, or a SIP response.
fn text_line(prefix: &[u8]) -> Option<Detection> {
    let text = std::str::from_utf8(prefix)
        .ok()
        .or_else(|| std::str::from_utf8(&prefix[..prefix.len().min(64)]).ok())?;
    if "SIP/2.0 ".starts_with(&text[..text.len().min(8)]) {
        return Some(if text.len() >= 8 {
            Detection::Done(Detected::Sip)
        } else {
            Detection::NeedMore
        });
    }
    let method = text.split(' ').next().unwrap_or_default();
    let known = HTTP_METHODS.iter().chain(&SIP_METHODS).any(|m| {
        if text.contains(' ') {
            *m == method
        } else {
            m.starts_with(method)
        }
    });
    if !known {
        return None;
    }
    let Some(end) = text.find('\n') else {
        return Some(Detection::NeedMore);
    };
    let line = text[..end].trim_end_matches('\r');
    let version = line.rsplit(' ').next().unwrap_or_default();
    if version.starts_with("HTTP/1.") {
        Some(Detection::Done(Detected::Http))
    } else if version == "SIP/2.0" {
        Some(Detection::Done(Detected::Sip))
    } else {
        None
    }
}

/// IRC registration commands and MSNP's `VER n MSNPx` greeting, both line-based.
fn irc_or_msnp(prefix: &[u8]) -> Option<Detection> {
    let text = String::from_utf8_lossy(&prefix[..prefix.len().min(512)]);
    let word = text
        .split([' ', '\r', '\n'])
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    if !text.contains([' ', '\r', '\n']) {
        // Still inside the first word.
        return std::iter::once(&"VER")
            .chain(&IRC_COMMANDS)
            .any(|c| c.starts_with(&word))
            .then_some(Detection::NeedMore);
    }
    if word == "VER" {
        if text.contains(" MSNP") {
            return Some(Detection::Done(Detected::Msnp));
        }
        return (!text.contains('\n')).then_some(Detection::NeedMore);
    }
    IRC_COMMANDS
        .contains(&word.as_str())
        .then_some(Detection::Done(Detected::Irc))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::inspect::tls_hello::tests::client_hello;

    fn done(bytes: &[u8]) -> Detected {
        match detect(bytes) {
            Detection::Done(found) => found,
            Detection::NeedMore => panic!("undecided on {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn identifies_each_protocol() {
        assert_eq!(done(b"<?xml version='1.0'?><stream:stream to='chat.example' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"), Detected::Xmpp);
        assert_eq!(done(b"<stream:stream to='x'"), Detected::Xmpp);
        assert_eq!(done(b"CAP LS 302\r\nNICK jane\r\n"), Detected::Irc);
        assert_eq!(done(b"NICK jane\r\nUSER jane 0 * :Jane\r\n"), Detected::Irc);
        assert_eq!(done(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Detected::Http);
        assert_eq!(
            done(b"CONNECT chat.example:5222 HTTP/1.1\r\n"),
            Detected::Http
        );
        assert_eq!(
            done(b"REGISTER sip:example.com SIP/2.0\r\nVia: x\r\n"),
            Detected::Sip
        );
        assert_eq!(
            done(b"MESSAGE sip:bob@example.com SIP/2.0\r\n"),
            Detected::Sip
        );
        assert_eq!(done(b"OPTIONS sip:x SIP/2.0\r\n"), Detected::Sip);
        assert_eq!(done(b"SIP/2.0 200 OK\r\n"), Detected::Sip);
        assert_eq!(
            done(b"\x13BitTorrent protocol\0\0\0\0\0\0\0\0"),
            Detected::Bittorrent
        );
        assert_eq!(done(b"VER 1 MSNP18 MSNP17 CVR0\r\n"), Detected::Msnp);
        assert_eq!(
            done(b"*\x01\x12\x34\x00\x04\x00\x00\x00\x01"),
            Detected::Oscar
        );
        assert_eq!(done(b"YMSG\x00\x10\x00\x00"), Detected::Ymsg);
        assert_eq!(done(b"\x00\x01garbage that is nothing"), Detected::Unknown);
        assert_eq!(done(b"HELLO there\r\n"), Detected::Unknown);
        let Detected::Tls(hello) = done(&client_hello("web.whatsapp.com", &["h2"])) else {
            panic!("not TLS")
        };
        assert_eq!(hello.sni.as_deref(), Some("web.whatsapp.com"));
    }

    #[test]
    fn asks_for_more_while_undecided() {
        for prefix in [
            &b"<?xm"[..],
            b"<stream:str",
            b"NIC",
            b"CAP",
            b"GE",
            b"GET /index",
            b"\x13BitTor",
            b"\x16\x03\x01\x02",
            b"*\x01",
            b"YM",
            b"VER 1",
        ] {
            assert_eq!(
                detect(prefix),
                Detection::NeedMore,
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_always_decides_within_the_bound(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let verdict = detect(&bytes);
            if bytes.len() >= MAX_PEEK && bytes.first() != Some(&0x16) {
                prop_assert!(matches!(verdict, Detection::Done(_)));
            }
        }

        #[test]
        fn a_known_prefix_is_never_unknown(cut in 1usize..60) {
            let stream = b"<?xml version='1.0'?><stream:stream to='chat.example' version='1.0'>";
            let cut = cut.min(stream.len());
            prop_assert_ne!(detect(&stream[..cut]), Detection::Done(Detected::Unknown));
        }
    }
}
