//! The tunnel's per-stream wire format, with no I/O. A connector opens one bidirectional
//! QUIC stream per TCP connection it accepted and starts it with a [`StreamHeader`]: where
//! the connection goes, where it came from, which connector carried it and, when the client
//! named one, the SOCKS user. The dataplane answers with a [`Reply`] (connected, refused by
//! policy, upstream unreachable, timed out, ...) before any payload flows back, so that the
//! connector can answer its client in the client's own protocol.
//!
//! Layout (integers big-endian):
//! - header: `IMGT`, version (1 byte), body length (2 bytes), then the body: fields as
//!   type (1 byte), length (1 byte), value. Required: target host (1), target port (2).
//!   Optional: client address (3, text), connector id (4), user (5), the connector's trace
//!   context (6: trace id, span id and trace flags, 16 + 8 + 1 bytes, as W3C Trace Context's
//!   `traceparent` carries them). Unknown field types are skipped, so a newer connector can add
//!   fields an older dataplane ignores; a trace context that is not valid is ignored, as W3C
//!   Trace Context asks, and never fails a stream.
//! - reply: version (1 byte), status (1 byte), reason length (1 byte), reason (UTF-8).
//!
//! Invariants: decoding never reads past what it was given and never panics; it reports
//! either a complete item with the bytes it consumed, how many more bytes it needs at least,
//! or why the bytes can never be valid. A header body is at most [`MAX_BODY`] bytes, so a
//! peer cannot make the dataplane buffer more than that before it knows where a stream goes.

use std::net::SocketAddr;

/// The tunnel protocol's version, in headers and replies.
pub const VERSION: u8 = 1;

const MAGIC: &[u8; 4] = b"IMGT";

/// Most bytes a header body may have.
pub const MAX_BODY: usize = 1024;

const FIELD_HOST: u8 = 1;
const FIELD_PORT: u8 = 2;
const FIELD_CLIENT: u8 = 3;
const FIELD_CONNECTOR: u8 = 4;
const FIELD_USER: u8 = 5;
const FIELD_TRACE: u8 = 6;

/// What a stream carries and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// The host the client asked for (a name or an address).
    pub host: String,
    /// The port the client asked for.
    pub port: u16,
    /// The client's own address, as the connector saw it.
    pub client: Option<SocketAddr>,
    /// The connector's id.
    pub connector: String,
    /// The SOCKS user, when the client gave one.
    pub user: Option<String>,
    /// The connector's span that carries the stream, when the connector exports traces.
    pub trace: Option<TraceParent>,
}

/// A span in another process, as W3C Trace Context's `traceparent` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace's id (never all zeros).
    pub trace_id: [u8; 16],
    /// The span's id (never all zeros).
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    const LENGTH: usize = 16 + 8 + 1;

    fn encode(&self) -> [u8; Self::LENGTH] {
        let mut out = [0; Self::LENGTH];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..24].copy_from_slice(&self.span_id);
        out[24] = self.flags;
        out
    }

    /// The trace context in `value`; `None` when it is not one (wrong length, or an id of
    /// zeros).
    fn decode(value: &[u8]) -> Option<Self> {
        let value: &[u8; Self::LENGTH] = value.try_into().ok()?;
        let (trace_id, rest) = value.split_at(16);
        let (span_id, flags) = rest.split_at(8);
        let parent = Self {
            trace_id: trace_id.try_into().ok()?,
            span_id: span_id.try_into().ok()?,
            flags: flags[0],
        };
        (parent.trace_id != [0; 16] && parent.span_id != [0; 8]).then_some(parent)
    }
}

/// How the dataplane answers a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Connected; the stream now carries the connection.
    Connected,
    /// Policy refused the connection.
    Refused,
    /// The server could not be reached.
    Unreachable,
    /// The server did not answer in time.
    TimedOut,
    /// The header could not be read.
    BadRequest,
    /// The dataplane is shutting down and takes no new streams: open them elsewhere.
    Draining,
    /// The dataplane holds its most connections: open this stream elsewhere.
    Busy,
}

impl Status {
    fn code(self) -> u8 {
        match self {
            Status::Connected => 0,
            Status::Refused => 1,
            Status::Unreachable => 2,
            Status::TimedOut => 3,
            Status::BadRequest => 4,
            Status::Draining => 5,
            Status::Busy => 6,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Status::Connected,
            1 => Status::Refused,
            2 => Status::Unreachable,
            3 => Status::TimedOut,
            4 => Status::BadRequest,
            5 => Status::Draining,
            6 => Status::Busy,
            _ => return None,
        })
    }
}

/// The dataplane's answer to a stream header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// What happened.
    pub status: Status,
    /// Why, for people (at most 255 bytes).
    pub reason: String,
}

/// The result of decoding from the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A complete item, and how many bytes it took.
    Complete(T, usize),
    /// At least this many more bytes are needed.
    NeedMore(usize),
}

/// Why bytes can never be a valid header or reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a tunnel stream.
    #[error("not an imgate tunnel stream (bad magic)")]
    Magic,
    /// A version this build does not speak.
    #[error("tunnel protocol version {0} is not supported (this build speaks {VERSION})")]
    Version(u8),
    /// The body is longer than allowed.
    #[error("the stream header is {0} bytes long, more than the {MAX_BODY} allowed")]
    TooLong(usize),
    /// A field runs past the body's end.
    #[error("a field of the stream header runs past its end")]
    Truncated,
    /// A required field is missing.
    #[error("the stream header has no {0}")]
    Missing(&'static str),
    /// A field's value is not what its type says.
    #[error("the stream header's {0} is not valid")]
    Invalid(&'static str),
    /// An unknown reply status.
    #[error("unknown reply status {0}")]
    Status(u8),
    /// A value too long for its field.
    #[error("the {0} is longer than 255 bytes")]
    FieldTooLong(&'static str),
}

impl StreamHeader {
    /// The header's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        let mut body = Vec::new();
        field(&mut body, FIELD_HOST, self.host.as_bytes(), "target host")?;
        field(
            &mut body,
            FIELD_PORT,
            &self.port.to_be_bytes(),
            "target port",
        )?;
        if let Some(client) = self.client {
            field(
                &mut body,
                FIELD_CLIENT,
                client.to_string().as_bytes(),
                "client address",
            )?;
        }
        field(
            &mut body,
            FIELD_CONNECTOR,
            self.connector.as_bytes(),
            "connector id",
        )?;
        if let Some(user) = &self.user {
            field(&mut body, FIELD_USER, user.as_bytes(), "user")?;
        }
        if let Some(trace) = &self.trace {
            field(&mut body, FIELD_TRACE, &trace.encode(), "trace context")?;
        }
        if body.len() > MAX_BODY {
            return Err(HeaderError::TooLong(body.len()));
        }
        let mut out = Vec::with_capacity(7 + body.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes a header from the front of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Decoded<Self>, HeaderError> {
        let prefix = bytes.len().min(MAGIC.len());
        if bytes[..prefix] != MAGIC[..prefix] {
            return Err(HeaderError::Magic);
        }
        if bytes.len() < 7 {
            return Ok(Decoded::NeedMore(7 - bytes.len()));
        }
        if bytes[4] != VERSION {
            return Err(HeaderError::Version(bytes[4]));
        }
        let length = u16::from_be_bytes([bytes[5], bytes[6]]) as usize;
        if length > MAX_BODY {
            return Err(HeaderError::TooLong(length));
        }
        let Some(body) = bytes.get(7..7 + length) else {
            return Ok(Decoded::NeedMore(7 + length - bytes.len()));
        };
        Ok(Decoded::Complete(Self::from_body(body)?, 7 + length))
    }

    fn from_body(mut body: &[u8]) -> Result<Self, HeaderError> {
        let (mut host, mut port, mut client, mut connector, mut user, mut trace) =
            (None, None, None, None, None, None);
        while let [kind, length, rest @ ..] = body {
            let length = *length as usize;
            let value = rest.get(..length).ok_or(HeaderError::Truncated)?;
            match *kind {
                FIELD_HOST => host = Some(text(value, "target host")?),
                FIELD_PORT => {
                    let bytes: [u8; 2] = value
                        .try_into()
                        .map_err(|_| HeaderError::Invalid("target port"))?;
                    port = Some(u16::from_be_bytes(bytes));
                }
                FIELD_CLIENT => {
                    client = Some(
                        text(value, "client address")?
                            .parse()
                            .map_err(|_| HeaderError::Invalid("client address"))?,
                    )
                }
                FIELD_CONNECTOR => connector = Some(text(value, "connector id")?),
                FIELD_USER => user = Some(text(value, "user")?),
                FIELD_TRACE => trace = TraceParent::decode(value),
                _ => {}
            }
            body = &rest[length..];
        }
        if !body.is_empty() {
            return Err(HeaderError::Truncated);
        }
        let host = host.ok_or(HeaderError::Missing("target host"))?;
        if host.is_empty() {
            return Err(HeaderError::Invalid("target host"));
        }
        Ok(Self {
            host,
            port: port.ok_or(HeaderError::Missing("target port"))?,
            client,
            connector: connector.ok_or(HeaderError::Missing("connector id"))?,
            user,
            trace,
        })
    }
}

impl Reply {
    /// The reply's bytes (a reason longer than 255 bytes is cut at a character boundary).
    pub fn encode(&self) -> Vec<u8> {
        let mut end = self.reason.len().min(255);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut out = vec![VERSION, self.status.code(), end as u8];
        out.extend_from_slice(&self.reason.as_bytes()[..end]);
        out
    }

    /// Decodes a reply from the front of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Decoded<Self>, HeaderError> {
        let [version, status, length, rest @ ..] = bytes else {
            return Ok(Decoded::NeedMore(3 - bytes.len()));
        };
        if *version != VERSION {
            return Err(HeaderError::Version(*version));
        }
        let status = Status::from_code(*status).ok_or(HeaderError::Status(*status))?;
        let length = *length as usize;
        let Some(reason) = rest.get(..length) else {
            return Ok(Decoded::NeedMore(length - rest.len()));
        };
        Ok(Decoded::Complete(
            Self {
                status,
                reason: text(reason, "reason")?,
            },
            3 + length,
        ))
    }
}

fn field(
    body: &mut Vec<u8>,
    kind: u8,
    value: &[u8],
    name: &'static str,
) -> Result<(), HeaderError> {
    let length = u8::try_from(value.len()).map_err(|_| HeaderError::FieldTooLong(name))?;
    body.push(kind);
    body.push(length);
    body.extend_from_slice(value);
    Ok(())
}

fn text(value: &[u8], name: &'static str) -> Result<String, HeaderError> {
    String::from_utf8(value.to_vec()).map_err(|_| HeaderError::Invalid(name))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header() -> StreamHeader {
        StreamHeader {
            host: "chat.example".into(),
            port: 5222,
            client: Some("192.0.2.7:51000".parse().expect("address")),
            connector: "acme-laptop-3".into(),
            user: Some("alice".into()),
            trace: Some(TraceParent {
                trace_id: *b"0123456789abcdef",
                span_id: *b"span-id!",
                flags: 1,
            }),
        }
    }

    #[test]
    fn a_header_and_a_reply_survive_encoding_and_ask_for_exactly_what_is_missing() {
        let bytes = header().encode().expect("encode");
        assert_eq!(
            StreamHeader::decode(&bytes),
            Ok(Decoded::Complete(header(), bytes.len()))
        );
        let mut with_payload = bytes.clone();
        with_payload.extend_from_slice(b"<stream:stream>");
        assert_eq!(
            StreamHeader::decode(&with_payload),
            Ok(Decoded::Complete(header(), bytes.len())),
            "payload after the header is not consumed"
        );
        for cut in 0..bytes.len() {
            match StreamHeader::decode(&bytes[..cut]) {
                Ok(Decoded::NeedMore(needed)) => assert!(cut + needed <= bytes.len()),
                other => panic!("a header cut at {cut} gave {other:?}"),
            }
        }

        let reply = Reply {
            status: Status::Refused,
            reason: "Blocked by policy (no-file-transfer)".into(),
        };
        let bytes = reply.encode();
        assert_eq!(
            Reply::decode(&bytes),
            Ok(Decoded::Complete(reply, bytes.len()))
        );
        assert_eq!(Reply::decode(&bytes[..2]), Ok(Decoded::NeedMore(1)));
    }

    #[test]
    fn bad_headers_are_refused_with_the_reason() {
        assert_eq!(
            StreamHeader::decode(b"GET / HTTP/1.1"),
            Err(HeaderError::Magic)
        );
        assert_eq!(
            StreamHeader::decode(b"IMGT\x02\x00\x00"),
            Err(HeaderError::Version(2))
        );
        assert_eq!(
            StreamHeader::decode(b"IMGT\x01\xff\xff"),
            Err(HeaderError::TooLong(0xffff))
        );
        let no_port = b"IMGT\x01\x00\x0a\x01\x01h\x04\x05conn1";
        assert_eq!(
            StreamHeader::decode(no_port),
            Err(HeaderError::Missing("target port"))
        );
        let mut unknown_field = header().encode().expect("encode");
        unknown_field.extend_from_slice(b"\x63\x02hi");
        let body = (unknown_field.len() - 7) as u16;
        unknown_field[5..7].copy_from_slice(&body.to_be_bytes());
        assert_eq!(
            StreamHeader::decode(&unknown_field),
            Ok(Decoded::Complete(header(), unknown_field.len())),
            "fields a newer connector adds are skipped"
        );
        let long = StreamHeader {
            host: "h".repeat(300),
            ..header()
        };
        assert_eq!(long.encode(), Err(HeaderError::FieldTooLong("target host")));
        assert_eq!(Reply::decode(b"\x01\x09\x00"), Err(HeaderError::Status(9)));
    }

    #[test]
    fn a_trace_context_that_is_not_valid_is_ignored_and_the_stream_goes_on() {
        let without = StreamHeader {
            trace: None,
            ..header()
        };
        let mut zeros = without.encode().expect("encode");
        let mut short = zeros.clone();
        zeros.extend_from_slice(&[FIELD_TRACE, 25]);
        zeros.extend_from_slice(&[0; 25]);
        short.extend_from_slice(&[FIELD_TRACE, 3, 1, 2, 3]);
        for mut bytes in [zeros, short] {
            let body = (bytes.len() - 7) as u16;
            bytes[5..7].copy_from_slice(&body.to_be_bytes());
            assert_eq!(
                StreamHeader::decode(&bytes),
                Ok(Decoded::Complete(without.clone(), bytes.len()))
            );
        }
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let reply = Reply {
            status: Status::Refused,
            reason: "é".repeat(200),
        };
        let Ok(Decoded::Complete(decoded, _)) = Reply::decode(&reply.encode()) else {
            panic!("the reply decodes");
        };
        assert_eq!(decoded.reason, "é".repeat(127));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics_and_never_overreaches(
            bytes in proptest::collection::vec(any::<u8>(), 0..1200),
            magic in any::<bool>(),
        ) {
            let mut input = if magic { b"IMGT\x01".to_vec() } else { Vec::new() };
            input.extend_from_slice(&bytes);
            if let Ok(Decoded::Complete(_, consumed)) = StreamHeader::decode(&input) {
                prop_assert!(consumed <= input.len());
            }
            if let Ok(Decoded::Complete(_, consumed)) = Reply::decode(&input) {
                prop_assert!(consumed <= input.len());
            }
        }

        #[test]
        fn every_header_that_encodes_decodes_to_itself(
            host in "[a-z0-9.-]{1,60}",
            port in any::<u16>(),
            connector in "\\PC{0,40}",
            user in proptest::option::of("\\PC{0,40}"),
            v6 in any::<bool>(),
            trace in proptest::option::of((any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())),
        ) {
            let client: SocketAddr = if v6 { "[2001:db8::1]:4000" } else { "10.0.0.1:4000" }
                .parse()
                .expect("address");
            let trace = trace
                .map(|(trace_id, span_id, flags)| TraceParent { trace_id, span_id, flags })
                .filter(|t| t.trace_id != [0; 16] && t.span_id != [0; 8]);
            let header = StreamHeader { host, port, client: Some(client), connector, user, trace };
            let bytes = header.encode().expect("encode");
            prop_assert_eq!(
                StreamHeader::decode(&bytes),
                Ok(Decoded::Complete(header, bytes.len()))
            );
        }
    }
}
