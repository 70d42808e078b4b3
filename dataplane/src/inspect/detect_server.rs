//! Identification when the client's first bytes do not decide it: from the server's first
//! bytes (protocols where the server speaks first), and, for a client that stays silent, from
//! the destination port of a known IM protocol.
//!
//! Invariants: pure, bounded and never panics like [`super::detect`]; the server's bytes
//! decide only for a protocol imgate inspects and whose servers speak first (IRC: a notice
//! or a numeric reply); a port decides only for a plain-text IM protocol whose client
//! speaks first or whose server answers anything (never a TLS port, whose bytes the relay
//! could not read).

use super::detect::{Detected, MAX_PEEK};

/// What the server's first bytes say: its first line, once complete, identifies IRC or
/// nothing.
pub fn detect_server(prefix: &[u8]) -> ServerDetection {
    let Some(end) = prefix.iter().position(|b| *b == b'\n') else {
        return if prefix.len() < MAX_PEEK {
            ServerDetection::NeedMore
        } else {
            ServerDetection::Unknown
        };
    };
    let line = String::from_utf8_lossy(&prefix[..end]);
    let mut words = line.trim_end_matches('\r').split(' ');
    let first = words.next().unwrap_or_default();
    let sourced = first.len() > 1 && first.starts_with(':');
    let command = if sourced {
        words.next().unwrap_or_default()
    } else {
        first
    };
    // A numeric reply only with its source (`220 …` without one is SMTP or FTP).
    let numeric = sourced && command.len() == 3 && command.bytes().all(|b| b.is_ascii_digit());
    let irc =
        command.eq_ignore_ascii_case("NOTICE") || command.eq_ignore_ascii_case("PING") || numeric;
    if irc {
        ServerDetection::Found(Detected::Irc)
    } else {
        ServerDetection::Unknown
    }
}

/// What [`detect_server`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerDetection {
    /// The server's bytes identify the protocol.
    Found(Detected),
    /// A line is not complete yet.
    NeedMore,
    /// The server's bytes identify nothing imgate inspects.
    Unknown,
}

/// The plain-text IM protocol served at `port`, for a client that sends nothing: XMPP's
/// client port, IRC's.
pub fn expected_at(port: u16) -> Option<Detected> {
    match port {
        5222 => Some(Detected::Xmpp),
        6665..=6669 | 7000 => Some(Detected::Irc),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn irc_servers_that_speak_first_are_irc() {
        for line in [
            ":irc.example.net NOTICE * :*** Looking up your hostname...\r\n",
            "NOTICE AUTH :*** Processing connection to irc.example.net\r\n",
            ":irc.example.net 020 * :Please wait while we process your connection.\r\n",
            "PING :12345\r\n",
        ] {
            assert_eq!(
                detect_server(line.as_bytes()),
                ServerDetection::Found(Detected::Irc),
                "{line}"
            );
        }
        assert_eq!(
            detect_server(b":irc.example.net NOT"),
            ServerDetection::NeedMore
        );
        for line in [
            "SSH-2.0-OpenSSH_9.6\r\n",
            "220 mail.example ESMTP\r\n",
            "+OK POP3\r\n",
        ] {
            assert_eq!(
                detect_server(line.as_bytes()),
                ServerDetection::Unknown,
                "{line}"
            );
        }
        assert_eq!(detect_server(&[b'x'; MAX_PEEK]), ServerDetection::Unknown);
    }

    #[test]
    fn only_plain_text_im_ports_are_expected() {
        assert_eq!(expected_at(5222), Some(Detected::Xmpp));
        assert_eq!(expected_at(6667), Some(Detected::Irc));
        for port in [5223, 6697, 443, 80, 22] {
            assert_eq!(expected_at(port), None, "{port}");
        }
    }

    proptest! {
        #[test]
        fn server_detection_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = detect_server(&bytes);
        }
    }
}
