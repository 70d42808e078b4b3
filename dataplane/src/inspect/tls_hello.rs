//! A TLS ClientHello reader: just enough to learn the server name (SNI) and the ALPN
//! protocols a client asks for, from the first bytes of a connection, without terminating TLS.
//!
//! Invariants: pure and bounded; the hello may span several TLS records, which are
//! reassembled up to [`MAX_HELLO`] bytes; malformed input yields an error, never a panic.

/// The largest ClientHello considered (bigger ones are treated as having no readable SNI).
pub const MAX_HELLO: usize = 16 * 1024;

/// What a ClientHello says about where the client is going.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The server name, lower-cased.
    pub sni: Option<String>,
    /// ALPN protocol names, in the client's order.
    pub alpn: Vec<String>,
}

/// Outcome of reading a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloRead {
    /// The hello was read.
    Hello(ClientHello),
    /// More bytes are needed (at least this many more).
    NeedMore(usize),
    /// Not a well-formed ClientHello.
    Malformed(&'static str),
}

/// True when `bytes` starts like a TLS handshake record.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[0] == 0x16 && bytes[1] == 0x03 && bytes[2] <= 0x04
}

/// Reads a ClientHello from the start of a connection.
pub fn read_client_hello(bytes: &[u8]) -> HelloRead {
    // Reassemble handshake bytes from consecutive handshake records.
    let mut handshake = Vec::new();
    let mut at = 0;
    loop {
        if bytes.len() < at + 5 {
            return HelloRead::NeedMore(at + 5 - bytes.len());
        }
        if bytes[at] != 0x16 || bytes[at + 1] != 0x03 {
            return HelloRead::Malformed("not a TLS handshake record");
        }
        let length = usize::from(u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]));
        if length == 0 || length > MAX_HELLO {
            return HelloRead::Malformed("bad TLS record length");
        }
        if bytes.len() < at + 5 + length {
            return HelloRead::NeedMore(at + 5 + length - bytes.len());
        }
        handshake.extend_from_slice(&bytes[at + 5..at + 5 + length]);
        at += 5 + length;
        if handshake.len() >= 4 {
            if handshake[0] != 0x01 {
                return HelloRead::Malformed("the first handshake message is not a ClientHello");
            }
            let body = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if body > MAX_HELLO {
                return HelloRead::Malformed("ClientHello too large");
            }
            if handshake.len() >= 4 + body {
                return match parse_hello(&handshake[4..4 + body]) {
                    Some(hello) => HelloRead::Hello(hello),
                    None => HelloRead::Malformed("truncated ClientHello"),
                };
            }
        }
        if at > MAX_HELLO {
            return HelloRead::Malformed("ClientHello too large");
        }
    }
}

/// A cursor over a byte slice that returns `None` instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn parse_hello(body: &[u8]) -> Option<ClientHello> {
    let mut reader = Reader { bytes: body };
    reader.take(2 + 32)?; // version, random
    reader.vec8()?; // session id
    reader.vec16()?; // cipher suites
    reader.vec8()?; // compression methods
    let mut hello = ClientHello::default();
    if reader.bytes.is_empty() {
        return Some(hello);
    }
    let mut extensions = Reader {
        bytes: reader.vec16()?,
    };
    while !extensions.bytes.is_empty() {
        let kind = extensions.u16()?;
        let mut data = Reader {
            bytes: extensions.vec16()?,
        };
        match kind {
            0 => {
                let mut names = Reader {
                    bytes: data.vec16()?,
                };
                while !names.bytes.is_empty() {
                    let name_type = names.u8()?;
                    let name = names.vec16()?;
                    if name_type == 0 && hello.sni.is_none() {
                        hello.sni = std::str::from_utf8(name)
                            .ok()
                            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let mut protocols = Reader {
                    bytes: data.vec16()?,
                };
                while !protocols.bytes.is_empty() {
                    hello
                        .alpn
                        .push(String::from_utf8_lossy(protocols.vec8()?).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A minimal but well-formed ClientHello record for `sni` and `alpn`.
    pub(crate) fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
        let mut extensions = Vec::new();
        let name = sni.as_bytes();
        let mut server_name = vec![0u8];
        server_name.extend_from_slice(&(name.len() as u16).to_be_bytes());
        server_name.extend_from_slice(name);
        let mut list = (server_name.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&server_name);
        extensions.extend_from_slice(&0u16.to_be_bytes());
        extensions.extend_from_slice(&(list.len() as u16).to_be_bytes());
        extensions.extend_from_slice(&list);
        if !alpn.is_empty() {
            let mut protocols = Vec::new();
            for protocol in alpn {
                protocols.push(protocol.len() as u8);
                protocols.extend_from_slice(protocol.as_bytes());
            }
            let mut data = (protocols.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&protocols);
            extensions.extend_from_slice(&16u16.to_be_bytes());
            extensions.extend_from_slice(&(data.len() as u16).to_be_bytes());
            extensions.extend_from_slice(&data);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
        body.extend_from_slice(&[0x01, 0x00]);
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut handshake = vec![0x01, 0, 0, 0];
        handshake[1..4].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    #[test]
    fn reads_sni_and_alpn() {
        let hello = client_hello("Chat.Example.", &["xmpp-client", "h2"]);
        assert_eq!(
            read_client_hello(&hello),
            HelloRead::Hello(ClientHello {
                sni: Some("chat.example".into()),
                alpn: vec!["xmpp-client".into(), "h2".into()]
            })
        );
        assert!(matches!(
            read_client_hello(&hello[..20]),
            HelloRead::NeedMore(_)
        ));
    }

    #[test]
    fn reassembles_a_hello_split_over_records() {
        let hello = client_hello("slack.com", &[]);
        let handshake = &hello[5..];
        let (first, second) = handshake.split_at(30);
        let mut split = Vec::new();
        for part in [first, second] {
            split.extend_from_slice(&[0x16, 0x03, 0x01]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        let HelloRead::Hello(read) = read_client_hello(&split) else {
            panic!("not read")
        };
        assert_eq!(read.sni.as_deref(), Some("slack.com"));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = read_client_hello(&bytes);
            let mut tls = vec![0x16, 0x03, 0x01];
            tls.extend_from_slice(&bytes);
            let _ = read_client_hello(&tls);
        }

        #[test]
        fn truncations_ask_for_more_or_fail_cleanly(cut in 0usize..120) {
            let hello = client_hello("teams.microsoft.com", &["h2"]);
            let cut = cut.min(hello.len() - 1);
            prop_assert!(!matches!(read_client_hello(&hello[..cut]), HelloRead::Hello(_)));
        }
    }
}
