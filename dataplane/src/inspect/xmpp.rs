//! XMPP client streams (RFC 6120), as a pure streaming parser: a [`Framer`] cuts the byte
//! stream into the stream header, top-level elements (stanzas and nonzas) and the closing tag,
//! with the consumed/needed contract; [`Stanza::parse`] reads what policy needs out of one
//! element (messages and their bodies, carbons, MUC joins, out-of-band links, file-transfer
//! offers of every kind, STARTTLS, SASL, stream management); [`Stanza::forwardable`] and
//! [`policy_error`] write stanzas back after a rule acted.
//!
//! Invariants: no element larger than [`MAX_STANZA`] is buffered (it is reported, so the
//! session can end with a protocol-correct `<policy-violation/>` stream error); a malformed
//! stream is reported with its offset, never skipped; parsing never panics; a rewritten body
//! is XML-escaped and everything else in the stanza is kept byte for byte, except the
//! message's text that policy does not read, which never goes on: every `<body>` after the
//! first (alternatives in other languages, RFC 6121 5.2.3) and XHTML-IM markup (XEP-0071),
//! which a client may show instead of the body.

use std::borrow::Cow;
use std::ops::Range;

use quick_xml::escape::escape;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

/// The largest top-level element accepted (Prosody's default stanza limit).
pub const MAX_STANZA: usize = 256 * 1024;

const NS_CARBONS: &str = "urn:xmpp:carbons:2";
const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_OOB: &str = "jabber:x:oob";
const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
const NS_JINGLE_FT: &str = "urn:xmpp:jingle:apps:file-transfer:5";
const NS_SI_FT: &str = "http://jabber.org/protocol/si/profile/file-transfer";
const NS_IBB: &str = "http://jabber.org/protocol/ibb";
/// Stream management (XEP-0198), both versions in use.
const NS_SM: [&str; 2] = ["urn:xmpp:sm:3", "urn:xmpp:sm:2"];
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_STREAM: &str = "http://etherx.jabber.org/streams";
const NS_CLIENT: &str = "jabber:client";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// What the framer found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    /// The stream header (`<?xml?>` and `<stream:stream …>`), with its `to`.
    Header {
        /// Bytes consumed.
        consumed: usize,
        /// The domain the client asks for.
        to: Option<String>,
    },
    /// One complete top-level element.
    Element {
        /// Its bytes.
        bytes: &'a [u8],
        /// Bytes consumed (leading white space included).
        consumed: usize,
    },
    /// White space between elements (keep-alives).
    Whitespace {
        /// Bytes consumed.
        consumed: usize,
    },
    /// `</stream:stream>`.
    Close {
        /// Bytes consumed.
        consumed: usize,
    },
    /// Read more.
    NeedMore,
    /// An element larger than [`MAX_STANZA`].
    TooLarge,
    /// Not XML the stream can continue from.
    Malformed {
        /// Byte offset in the buffer.
        at: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Cuts a client's (or server's) byte stream into items.
#[derive(Debug, Default, Clone)]
pub struct Framer {
    in_stream: bool,
}

fn is_blank(byte: &u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

impl Framer {
    /// Expects a new stream header next (after STARTTLS or SASL success).
    pub fn restart(&mut self) {
        self.in_stream = false;
    }

    /// The next item at the start of `buffer`.
    pub fn next<'a>(&mut self, buffer: &'a [u8]) -> Item<'a> {
        let blank = buffer.iter().take_while(|b| is_blank(b)).count();
        if blank == buffer.len() {
            return if blank > 0 {
                Item::Whitespace { consumed: blank }
            } else {
                Item::NeedMore
            };
        }
        if !self.in_stream {
            return self.header(buffer);
        }
        if blank > 0 {
            return Item::Whitespace { consumed: blank };
        }
        if buffer.starts_with(b"</") {
            return match buffer.iter().position(|b| *b == b'>') {
                Some(end) => Item::Close { consumed: end + 1 },
                None if buffer.len() > 256 => Item::Malformed {
                    at: 0,
                    reason: "unterminated closing tag".into(),
                },
                None => Item::NeedMore,
            };
        }
        element(buffer)
    }

    fn header<'a>(&mut self, buffer: &'a [u8]) -> Item<'a> {
        let mut reader = Reader::from_reader(buffer);
        reader.config_mut().check_end_names = false;
        loop {
            match reader.read_event() {
                Ok(Event::Decl(_) | Event::Text(_) | Event::Comment(_)) => {}
                Ok(Event::Start(start)) if start.local_name().as_ref() == b"stream" => {
                    // Elements are read in the client namespace: a stream that names another
                    // would have the server read them otherwise than imgate does.
                    if attribute(&start, b"xmlns").is_some_and(|ns| ns != NS_CLIENT) {
                        return Item::Malformed {
                            at: 0,
                            reason: "the stream's content namespace is not jabber:client".into(),
                        };
                    }
                    self.in_stream = true;
                    let to = attribute(&start, b"to");
                    return Item::Header {
                        consumed: reader.buffer_position() as usize,
                        to,
                    };
                }
                Ok(Event::Eof) => {
                    return if buffer.len() > MAX_STANZA {
                        Item::TooLarge
                    } else {
                        Item::NeedMore
                    };
                }
                Ok(_) => {
                    return Item::Malformed {
                        at: reader.buffer_position() as usize,
                        reason: "expected a stream header".into(),
                    };
                }
                Err(error) => {
                    return incomplete_or_malformed(
                        buffer,
                        reader.error_position() as usize,
                        error.to_string(),
                    );
                }
            }
        }
    }
}

/// One complete element at the start of `buffer`.
fn element(buffer: &[u8]) -> Item<'_> {
    let mut reader = Reader::from_reader(buffer);
    let mut depth = 0usize;
    loop {
        let event = reader.read_event();
        let position = reader.buffer_position() as usize;
        match event {
            Ok(Event::Start(_)) => depth += 1,
            Ok(Event::End(_)) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Item::Element {
                        bytes: &buffer[..position],
                        consumed: position,
                    };
                }
            }
            Ok(Event::Empty(_)) if depth == 0 => {
                return Item::Element {
                    bytes: &buffer[..position],
                    consumed: position,
                };
            }
            Ok(Event::Eof) => {
                return if buffer.len() > MAX_STANZA {
                    Item::TooLarge
                } else {
                    Item::NeedMore
                };
            }
            Ok(Event::Decl(_) | Event::DocType(_)) => {
                return Item::Malformed {
                    at: position,
                    reason: "XML declarations and DTDs are not allowed inside a stream".into(),
                };
            }
            Ok(_) => {}
            Err(error) => {
                return incomplete_or_malformed(
                    buffer,
                    reader.error_position() as usize,
                    error.to_string(),
                );
            }
        }
        if position > MAX_STANZA {
            return Item::TooLarge;
        }
    }
}

/// A parse error at the end of the data is a truncated element; anywhere else it is damage.
fn incomplete_or_malformed(buffer: &[u8], at: usize, reason: String) -> Item<'_> {
    let rest = buffer.get(at..).unwrap_or_default();
    if buffer.len() > MAX_STANZA {
        Item::TooLarge
    } else if !rest.contains(&b'>') {
        Item::NeedMore
    } else {
        Item::Malformed { at, reason }
    }
}

fn attribute(start: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    let [value] = attributes(start, [name]);
    value
}

/// The values of the attributes named `names`, read in one pass (the first of each name).
fn attributes<const N: usize>(start: &BytesStart<'_>, names: [&[u8]; N]) -> [Option<String>; N] {
    let mut values = [const { None }; N];
    for attribute in start.attributes().flatten() {
        if let Some(slot) = names
            .iter()
            .position(|name| *name == attribute.key.as_ref())
            .and_then(|i| values.get_mut(i))
            .filter(|slot| slot.is_none())
        {
            *slot = attribute
                .normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned());
        }
    }
    values
}

/// A carbon copy of a message the user's other client sent or received (XEP-0280).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carbon {
    /// Sent by another of the user's clients.
    Sent,
    /// Received by another of the user's clients.
    Received,
}

/// The addressing of the message inside a carbon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Its `from`.
    pub from: Option<String>,
    /// Its `to`.
    pub to: Option<String>,
    /// Its `type`.
    pub kind: Option<String>,
    /// Its `id`.
    pub id: Option<String>,
}

/// A file-transfer offer, of any of the mechanisms XMPP has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHint {
    /// `http-upload` (XEP-0363 slot request), `jingle` (XEP-0234), `si` (XEP-0096), `ibb`
    /// (XEP-0047 session open) or `oob` (XEP-0066 link).
    pub mechanism: &'static str,
    /// The file name, when given.
    pub name: Option<String>,
    /// The size, when given.
    pub size: Option<u64>,
}

/// A stream-management (XEP-0198) element. Stream management does not cross imgate: its
/// counts would ignore what imgate injects and blocks, so a client would resend or drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamManagement {
    /// `<enable/>` or `<resume/>`, in this namespace: answered with [`stream_management_refused`].
    Start(&'static str),
    /// Any other element of it (`<r/>`, `<a/>`, `<enabled/>`, ...).
    Other,
}

/// What policy needs from one top-level element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stanza {
    /// `message`, `presence`, `iq`, or a nonza (`starttls`, `auth`, `r`, ...).
    pub name: String,
    /// The `to` attribute.
    pub to: Option<String>,
    /// The `from` attribute.
    pub from: Option<String>,
    /// The `type` attribute.
    pub kind: Option<String>,
    /// The `id` attribute.
    pub id: Option<String>,
    /// The message body (of the forwarded message, for a carbon).
    pub body: Option<String>,
    /// Where the body's text sits in the element's bytes.
    pub body_span: Option<Range<usize>>,
    /// Where the message's other text sits (later `<body>` elements, XHTML-IM markup): whole
    /// elements, left out of what is forwarded.
    pub unread: Vec<Range<usize>>,
    /// A carbon copy, and which way.
    pub carbon: Option<Carbon>,
    /// For a carbon, the forwarded message's addressing.
    pub forwarded: Option<Forwarded>,
    /// A presence that joins a multi-user chat room.
    pub muc_join: bool,
    /// Out-of-band links (XEP-0066).
    pub urls: Vec<String>,
    /// A file-transfer offer.
    pub file: Option<FileHint>,
    /// A stream-management element.
    pub stream_management: Option<StreamManagement>,
    /// `<starttls/>` (or `<proceed/>`).
    pub starttls: bool,
    /// A SASL element (`<auth/>`, `<success/>`, ...); passed through untouched.
    pub sasl: bool,
}

/// Why an element could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XMPP element at byte {at}: {reason}")]
pub struct XmppError {
    /// Byte offset.
    pub at: usize,
    /// What is wrong.
    pub reason: String,
}

impl Stanza {
    /// Reads one complete element (as cut by the [`Framer`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, XmppError> {
        let mut reader = Reader::from_reader(bytes);
        let mut stanza = Stanza::default();
        // (local name, namespace) of each open element.
        let mut path: Vec<(Vec<u8>, String)> = Vec::new();
        let mut body = String::new();
        let mut body_open: Option<usize> = None;
        // An unread element being skipped: where it starts, and the depth it opened at.
        let mut unread_open: Option<(usize, usize)> = None;
        let mut prefixes = Prefixes::default();
        loop {
            let before = reader.buffer_position() as usize;
            let event = reader.read_event().map_err(|e| XmppError {
                at: reader.error_position() as usize,
                reason: e.to_string(),
            })?;
            let after = reader.buffer_position() as usize;
            match event {
                Event::Start(start) => {
                    prefixes.declare(&start, path.len());
                    let ns = prefixes.namespace(&start, &path, before)?;
                    stanza.visit(&start, &ns, &path);
                    if unread_open.is_none() && stanza.is_unread(&start, &ns, &path) {
                        unread_open = Some((before, path.len()));
                    } else if start.local_name().as_ref() == b"body"
                        && stanza.in_message_body_position(&path)
                        && stanza.body.is_none()
                    {
                        body_open = Some(after);
                        body.clear();
                    }
                    path.push((start.local_name().as_ref().to_vec(), ns));
                }
                Event::Empty(start) => {
                    prefixes.declare(&start, path.len());
                    let ns = prefixes.namespace(&start, &path, before)?;
                    prefixes.close(path.len());
                    stanza.visit(&start, &ns, &path);
                    if unread_open.is_none() && stanza.is_unread(&start, &ns, &path) {
                        stanza.unread.push(before..after);
                    } else if start.local_name().as_ref() == b"body"
                        && stanza.in_message_body_position(&path)
                        && stanza.body.is_none()
                    {
                        stanza.body = Some(String::new());
                    }
                }
                Event::End(_) => {
                    if let Some(open) =
                        body_open.take_if(|_| path.last().is_some_and(|(name, _)| name == b"body"))
                    {
                        stanza.body = Some(std::mem::take(&mut body));
                        stanza.body_span = Some(open..before);
                    }
                    path.pop();
                    prefixes.close(path.len());
                    if let Some((start, _)) = unread_open.take_if(|(_, depth)| *depth == path.len())
                    {
                        stanza.unread.push(start..after);
                    }
                }
                Event::Text(text) if body_open.is_some() => {
                    body.push_str(&text.xml10_content().map_err(|e| XmppError {
                        at: before,
                        reason: e.to_string(),
                    })?)
                }
                Event::CData(data) if body_open.is_some() => {
                    body.push_str(&String::from_utf8_lossy(&data))
                }
                Event::GeneralRef(reference) if body_open.is_some() => {
                    body.push_str(&resolve(&reference).ok_or_else(|| XmppError {
                        at: before,
                        reason: "unknown entity".into(),
                    })?)
                }
                Event::Text(text)
                    if path
                        .last()
                        .is_some_and(|(name, ns)| name == b"url" && ns == NS_OOB) =>
                {
                    if let Ok(url) = text.xml10_content() {
                        stanza.urls.push(url.trim().to_owned());
                    }
                }
                Event::Text(text) => {
                    stanza.file_text(&path, &text.xml10_content().unwrap_or_default())
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if stanza.name.is_empty() {
            return Err(XmppError {
                at: 0,
                reason: "no element".into(),
            });
        }
        Ok(stanza)
    }

    /// True when `start` (in namespace `ns`) at `path` is left out of what is forwarded:
    /// message text policy does not read (a `<body>` after the first, or XHTML-IM markup, an
    /// `<html>` element in whatever namespace or prefix it is given, where a body would be),
    /// or a stream-management offer among stream features.
    fn is_unread(&self, start: &BytesStart<'_>, ns: &str, path: &[(Vec<u8>, String)]) -> bool {
        if let [(root, _)] = path
            && root == b"features"
            && NS_SM.contains(&ns)
        {
            return true;
        }
        let name = start.local_name();
        self.in_message_body_position(path)
            && match name.as_ref() {
                b"body" => self.body.is_some(),
                b"html" => true,
                _ => false,
            }
    }

    /// True when a `<body>` at this depth is the message's body: a direct child of the root
    /// message, or of the message forwarded inside a carbon.
    fn in_message_body_position(&self, path: &[(Vec<u8>, String)]) -> bool {
        match path {
            [(root, _)] => root == b"message",
            [(root, _), (carbon, _), (forwarded, _), (inner, _)] => {
                root == b"message"
                    && (carbon == b"sent" || carbon == b"received")
                    && forwarded == b"forwarded"
                    && inner == b"message"
            }
            _ => false,
        }
    }

    fn visit(&mut self, start: &BytesStart<'_>, ns: &str, path: &[(Vec<u8>, String)]) {
        let local = start.local_name();
        let name = local.as_ref();
        if path.is_empty() {
            self.name = String::from_utf8_lossy(name).into_owned();
            [self.to, self.from, self.kind, self.id] =
                attributes(start, [b"to", b"from", b"type", b"id"]);
            match ns {
                NS_TLS => self.starttls = name == b"starttls" || name == b"proceed",
                NS_SASL => self.sasl = true,
                _ => {}
            }
            if let Some(sm) = NS_SM.into_iter().find(|sm| *sm == ns) {
                self.stream_management = Some(match name {
                    b"enable" | b"resume" => StreamManagement::Start(sm),
                    _ => StreamManagement::Other,
                });
            }
            return;
        }
        let size = || attribute(start, b"size").and_then(|s| s.parse().ok());
        match (name, ns) {
            (b"sent", NS_CARBONS) if path.len() == 1 => self.carbon = Some(Carbon::Sent),
            (b"received", NS_CARBONS) if path.len() == 1 => self.carbon = Some(Carbon::Received),
            (b"x", NS_MUC) if self.name == "presence" && path.len() == 1 => self.muc_join = true,
            (b"message", _) if path.len() == 3 && self.carbon.is_some() => {
                let [from, to, kind, id] = attributes(start, [b"from", b"to", b"type", b"id"]);
                self.forwarded = Some(Forwarded { from, to, kind, id })
            }
            (b"request", NS_UPLOAD) => {
                self.file = Some(FileHint {
                    mechanism: "http-upload",
                    name: attribute(start, b"filename"),
                    size: size(),
                })
            }
            (b"description", NS_JINGLE_FT) => {
                self.file = Some(FileHint {
                    mechanism: "jingle",
                    name: None,
                    size: None,
                })
            }
            (b"file", NS_SI_FT) => {
                self.file = Some(FileHint {
                    mechanism: "si",
                    name: attribute(start, b"name"),
                    size: size(),
                })
            }
            (b"open", NS_IBB) => {
                self.file = Some(FileHint {
                    mechanism: "ibb",
                    name: None,
                    size: None,
                })
            }
            (b"x", NS_OOB) if self.file.is_none() => {
                self.file = Some(FileHint {
                    mechanism: "oob",
                    name: None,
                    size: None,
                })
            }
            _ => {}
        }
    }

    /// `<name>` and `<size>` inside a Jingle file description.
    fn file_text(&mut self, path: &[(Vec<u8>, String)], text: &str) {
        let Some(file) = self.file.as_mut().filter(|f| f.mechanism == "jingle") else {
            return;
        };
        match path.last() {
            Some((name, ns)) if name == b"name" && ns == NS_JINGLE_FT => {
                file.name = Some(text.trim().to_owned())
            }
            Some((name, ns)) if name == b"size" && ns == NS_JINGLE_FT => {
                file.size = text.trim().parse().ok()
            }
            _ => {}
        }
    }

    /// The element's bytes as they may go on: without the text policy did not read
    /// ([`Self::unread`]), and with the body's text replaced by `body` (escaped) when given
    /// (a stanza without a body keeps none).
    pub fn forwardable<'a>(&self, bytes: &'a [u8], body: Option<&str>) -> Cow<'a, [u8]> {
        let escaped = body.map(|text| escape(text).into_owned());
        let mut edits: Vec<(Range<usize>, &[u8])> = self
            .unread
            .iter()
            .map(|range| (range.clone(), &b""[..]))
            .collect();
        if let (Some(span), Some(text)) = (&self.body_span, &escaped) {
            edits.push((span.clone(), text.as_bytes()));
        }
        if edits.is_empty() {
            return Cow::Borrowed(bytes);
        }
        edits.sort_by_key(|(range, _)| range.start);
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        for (range, with) in edits {
            // The spans come from parsing these very bytes: in order, apart and within them.
            if range.start < at || range.end > bytes.len() || range.start > range.end {
                continue;
            }
            out.extend_from_slice(&bytes[at..range.start]);
            out.extend_from_slice(with);
            at = range.end;
        }
        out.extend_from_slice(&bytes[at..]);
        Cow::Owned(out)
    }
}

/// The namespace prefixes declared in an element being read: (depth of the declaring
/// element, prefix, namespace), innermost last.
#[derive(Default)]
struct Prefixes(Vec<(usize, Vec<u8>, String)>);

impl Prefixes {
    /// Takes in the prefixes `start`, at `depth`, declares.
    fn declare(&mut self, start: &BytesStart<'_>, depth: usize) {
        for attribute in start.attributes().flatten() {
            if let Some(prefix) = attribute.key.as_ref().strip_prefix(b"xmlns:") {
                let ns = attribute
                    .normalized_value(XmlVersion::Implicit1_0)
                    .map(|v| v.into_owned())
                    .unwrap_or_default();
                self.0.push((depth, prefix.to_vec(), ns));
            }
        }
    }

    /// Forgets the prefixes of elements at `depth` and deeper, once they end.
    fn close(&mut self, depth: usize) {
        while self.0.last().is_some_and(|(at, _, _)| *at >= depth) {
            self.0.pop();
        }
    }

    /// The namespace of `start`: by its prefix, or its own default declaration, or its
    /// parent's. Only `stream:` may be declared outside the element (on the stream header):
    /// any other prefix the element does not declare, a server would resolve from the
    /// stream header, where imgate does not read it, so the element cannot be read.
    fn namespace(
        &self,
        start: &BytesStart<'_>,
        path: &[(Vec<u8>, String)],
        at: usize,
    ) -> Result<String, XmppError> {
        let name = start.name();
        let Some(prefix) = name.prefix() else {
            return Ok(attribute(start, b"xmlns")
                .unwrap_or_else(|| path.last().map(|(_, ns)| ns.clone()).unwrap_or_default()));
        };
        let prefix = prefix.as_ref();
        match self.0.iter().rev().find(|(_, p, _)| p == prefix) {
            Some((_, _, ns)) => Ok(ns.clone()),
            None if prefix == b"stream" => Ok(NS_STREAM.to_owned()),
            None => Err(XmppError {
                at,
                reason: format!(
                    "the prefix {:?} is not declared in the element",
                    String::from_utf8_lossy(prefix)
                ),
            }),
        }
    }
}

fn resolve(reference: &quick_xml::events::BytesRef<'_>) -> Option<String> {
    if let Ok(Some(c)) = reference.resolve_char_ref() {
        return Some(c.to_string());
    }
    let name = reference.decode().ok()?;
    resolve_predefined_entity(&name).map(str::to_owned)
}

/// The error a blocked stanza's sender receives: the stanza bounced with a
/// `<policy-violation/>` condition (RFC 6120 §8.3.3.12) and a human-readable reason.
pub fn policy_error(stanza: &Stanza, reason: &str) -> Vec<u8> {
    let name = if matches!(stanza.name.as_str(), "message" | "presence" | "iq") {
        stanza.name.as_str()
    } else {
        "message"
    };
    let mut out = format!("<{name} type='error'");
    if let Some(to) = &stanza.to {
        out.push_str(&format!(" from='{}'", escape(to.as_str())));
    }
    if let Some(id) = &stanza.id {
        out.push_str(&format!(" id='{}'", escape(id.as_str())));
    }
    out.push_str(&format!(
        "><error type='modify'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>{}</text></error></{name}>",
        escape(reason)
    ));
    out.into_bytes()
}

/// The answer to a client's `<enable/>` or `<resume/>` (XEP-0198 §3, §5): stream
/// management is not available through imgate.
pub fn stream_management_refused(namespace: &str) -> Vec<u8> {
    format!(
        "<failed xmlns='{namespace}'><feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    )
    .into_bytes()
}

/// The stream error that ends a session whose peer sent something it must not (an oversized
/// or malformed element).
pub fn stream_error(condition: &str, reason: &str) -> Vec<u8> {
    format!(
        "<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{}</text></stream:error></stream:stream>",
        escape(reason)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream to='chat.example' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

    fn items(mut bytes: &[u8]) -> Vec<String> {
        let mut framer = Framer::default();
        let mut out = Vec::new();
        loop {
            match framer.next(bytes) {
                Item::Header { consumed, to } => {
                    out.push(format!("header {}", to.unwrap_or_default()));
                    bytes = &bytes[consumed..];
                }
                Item::Element {
                    bytes: element,
                    consumed,
                } => {
                    out.push(String::from_utf8_lossy(element).into_owned());
                    bytes = &bytes[consumed..];
                }
                Item::Whitespace { consumed } => bytes = &bytes[consumed..],
                Item::Close { consumed } => {
                    out.push("close".into());
                    bytes = &bytes[consumed..];
                }
                other => {
                    out.push(format!("{other:?}"));
                    return out;
                }
            }
        }
    }

    #[test]
    fn frames_a_stream() {
        let mut stream = HEADER.to_vec();
        stream.extend_from_slice(b" <message to='bob@chat.example' type='chat'><body>hi &amp; bye</body></message>\n<r xmlns='urn:xmpp:sm:3'/></stream:stream>");
        assert_eq!(
            items(&stream),
            vec![
                "header chat.example".to_owned(),
                "<message to='bob@chat.example' type='chat'><body>hi &amp; bye</body></message>"
                    .into(),
                "<r xmlns='urn:xmpp:sm:3'/>".into(),
                "close".into(),
                "NeedMore".into()
            ]
        );
    }

    #[test]
    fn asks_for_more_on_every_truncation() {
        let mut stream = HEADER.to_vec();
        stream.extend_from_slice(b"<message to='bob@chat.example'><body>hello</body></message>");
        for cut in 1..stream.len() {
            let mut framer = Framer::default();
            let mut rest = &stream[..cut];
            loop {
                match framer.next(rest) {
                    Item::Header { consumed, .. }
                    | Item::Element { consumed, .. }
                    | Item::Whitespace { consumed } => rest = &rest[consumed..],
                    Item::NeedMore => break,
                    other => panic!("cut at {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_stream_in_another_content_namespace_is_not_read() {
        let header = b"<stream:stream to='chat.example' xmlns='urn:xmpp:sm:3' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
        assert!(matches!(
            Framer::default().next(header),
            Item::Malformed { .. }
        ));
    }

    #[test]
    fn reports_oversized_and_malformed_elements() {
        let mut framer = Framer::default();
        assert!(matches!(framer.next(HEADER), Item::Header { .. }));
        let mut huge = b"<message><body>".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_STANZA + 10));
        assert_eq!(framer.next(&huge), Item::TooLarge);
        assert!(matches!(
            framer.next(b"<message></iq>"),
            Item::Malformed { .. }
        ));
        assert!(matches!(
            framer.next(b"<?xml version='1.0'?><message/>"),
            Item::Malformed { .. }
        ));
    }

    #[test]
    fn text_policy_does_not_read_never_goes_on() {
        let xhtml = "<html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'><p>project <b>falcon</b></p></body></html>";
        let bytes = format!(
            "<message to='bob@chat.example' type='chat'><body>hi</body><body xml:lang='de'>project falcon</body>{xhtml}<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        );
        let stanza = Stanza::parse(bytes.as_bytes()).expect("parses");
        assert_eq!(
            stanza.body.as_deref(),
            Some("hi"),
            "policy reads the first body"
        );
        assert_eq!(stanza.unread.len(), 2);
        let forwarded = stanza.forwardable(bytes.as_bytes(), None);
        assert_eq!(
            String::from_utf8_lossy(&forwarded),
            "<message to='bob@chat.example' type='chat'><body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        );
        let redacted = stanza.forwardable(bytes.as_bytes(), Some("h█"));
        assert_eq!(
            String::from_utf8_lossy(&redacted),
            "<message to='bob@chat.example' type='chat'><body>h█</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        );

        // Markup with no body at all, and an alternative before the body policy reads.
        let prefixed = "<message><body>hi</body><h:html xmlns:h='http://jabber.org/protocol/xhtml-im'><b:body xmlns:b='http://www.w3.org/1999/xhtml'>project falcon</b:body></h:html></message>";
        let stanza = Stanza::parse(prefixed.as_bytes()).expect("parses");
        assert_eq!(
            stanza.forwardable(prefixed.as_bytes(), None).as_ref(),
            b"<message><body>hi</body></message>",
            "markup under a prefix is left out too"
        );
        let markup_only = format!("<message to='bob@chat.example'>{xhtml}</message>");
        let stanza = Stanza::parse(markup_only.as_bytes()).expect("parses");
        assert_eq!(stanza.body, None);
        assert_eq!(
            stanza.forwardable(markup_only.as_bytes(), None).as_ref(),
            b"<message to='bob@chat.example'></message>"
        );
        let carbon = "<message><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message to='bob@chat.example'><body>hi</body><body xml:lang='fr'>project falcon</body></message></forwarded></sent></message>";
        let stanza = Stanza::parse(carbon.as_bytes()).expect("parses");
        assert_eq!(stanza.body.as_deref(), Some("hi"));
        assert!(
            !String::from_utf8_lossy(&stanza.forwardable(carbon.as_bytes(), None))
                .contains("falcon"),
            "a carbon's alternatives are left out too"
        );
        // Elsewhere, a <body> is not message text and stays.
        let iq = "<iq type='set'><query xmlns='jabber:iq:private'><body>note</body><body>two</body></query></iq>";
        let stanza = Stanza::parse(iq.as_bytes()).expect("parses");
        assert!(stanza.unread.is_empty());
    }

    #[test]
    fn reads_messages_and_rewrites_the_body() {
        let bytes = b"<message to='bob@chat.example' id='m1' type='chat'><body>card 4111 &lt;x&gt;</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>";
        let stanza = Stanza::parse(bytes).expect("parses");
        assert_eq!(
            (
                stanza.name.as_str(),
                stanza.kind.as_deref(),
                stanza.to.as_deref()
            ),
            ("message", Some("chat"), Some("bob@chat.example"))
        );
        assert_eq!(stanza.body.as_deref(), Some("card 4111 <x>"));
        let rewritten = stanza.forwardable(bytes, Some("card ████ <x>"));
        assert_eq!(
            String::from_utf8(rewritten.to_vec()).expect("utf-8"),
            "<message to='bob@chat.example' id='m1' type='chat'><body>card ████ &lt;x&gt;</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        );
    }

    #[test]
    fn reads_carbons_muc_oob_files_and_nonzas() {
        let carbon = Stanza::parse(b"<message from='jane@chat.example' to='jane@chat.example/phone'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message from='jane@chat.example/laptop' to='bob@chat.example' type='chat' id='m1'><body>from my laptop</body></message></forwarded></sent></message>").expect("parses");
        assert_eq!(
            (carbon.carbon, carbon.body.as_deref()),
            (Some(Carbon::Sent), Some("from my laptop"))
        );
        assert_eq!(
            carbon.forwarded,
            Some(Forwarded {
                from: Some("jane@chat.example/laptop".into()),
                to: Some("bob@chat.example".into()),
                kind: Some("chat".into()),
                id: Some("m1".into()),
            })
        );
        let join = Stanza::parse(b"<presence to='desk@conference.chat.example/jane'><x xmlns='http://jabber.org/protocol/muc'/></presence>").expect("parses");
        assert!(join.muc_join);
        let oob = Stanza::parse(b"<message to='bob@chat.example'><body>see</body><x xmlns='jabber:x:oob'><url>https://files.example/q3.xlsx</url></x></message>").expect("parses");
        assert_eq!(oob.urls, ["https://files.example/q3.xlsx"]);
        assert_eq!(oob.file.as_ref().map(|f| f.mechanism), Some("oob"));
        let upload = Stanza::parse(b"<iq type='get' to='upload.chat.example' id='u1'><request xmlns='urn:xmpp:http:upload:0' filename='deck.pdf' size='23456' content-type='application/pdf'/></iq>").expect("parses");
        assert_eq!(
            upload.file,
            Some(FileHint {
                mechanism: "http-upload",
                name: Some("deck.pdf".into()),
                size: Some(23456)
            })
        );
        let jingle = Stanza::parse(b"<iq type='set' to='bob@chat.example/pc' id='j1'><jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s1'><content creator='initiator' name='f'><description xmlns='urn:xmpp:jingle:apps:file-transfer:5'><file><name>setup.exe</name><size>1048576</size></file></description></content></jingle></iq>").expect("parses");
        assert_eq!(
            jingle.file,
            Some(FileHint {
                mechanism: "jingle",
                name: Some("setup.exe".into()),
                size: Some(1_048_576)
            })
        );
        let si = Stanza::parse(b"<iq type='set' id='s1'><si xmlns='http://jabber.org/protocol/si' profile='http://jabber.org/protocol/si/profile/file-transfer'><file xmlns='http://jabber.org/protocol/si/profile/file-transfer' name='a.zip' size='10'/></si></iq>").expect("parses");
        assert_eq!(
            si.file,
            Some(FileHint {
                mechanism: "si",
                name: Some("a.zip".into()),
                size: Some(10)
            })
        );
        let ibb = Stanza::parse(b"<iq type='set' id='i1'><open xmlns='http://jabber.org/protocol/ibb' block-size='4096' sid='x'/></iq>").expect("parses");
        assert_eq!(ibb.file.map(|f| f.mechanism), Some("ibb"));
        assert!(
            Stanza::parse(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                .expect("parses")
                .starttls
        );
        assert!(Stanza::parse(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGphbmUAc2VjcmV0</auth>").expect("parses").sasl);
        for (element, read) in [
            ("<a xmlns='urn:xmpp:sm:3' h='42'/>", StreamManagement::Other),
            (
                "<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
                StreamManagement::Start("urn:xmpp:sm:3"),
            ),
            (
                "<sm:enable xmlns:sm='urn:xmpp:sm:2'/>",
                StreamManagement::Start("urn:xmpp:sm:2"),
            ),
            (
                "<s:enable xmlns:sm='urn:xmpp:sm:3' xmlns:s='urn:xmpp:sm:3'/>",
                StreamManagement::Start("urn:xmpp:sm:3"),
            ),
            (
                "<resume xmlns='urn:xmpp:sm:3' h='1' previd='x'/>",
                StreamManagement::Start("urn:xmpp:sm:3"),
            ),
        ] {
            let stanza = Stanza::parse(element.as_bytes()).expect("parses");
            assert_eq!(stanza.stream_management, Some(read), "{element}");
        }
        assert_eq!(
            Stanza::parse(b"<enable xmlns='urn:xmpp:sm:4'/>")
                .expect("parses")
                .stream_management,
            None
        );
        // A prefix the server would take from the stream header is not read by guess.
        for element in [
            "<sm:enable resume='true'/>",
            "<iq type='set'><u:request filename='q3.xlsx' size='9'/></iq>",
        ] {
            assert!(Stanza::parse(element.as_bytes()).is_err(), "{element}");
        }
        // One an ancestor in the element declares is resolved.
        let oob = Stanza::parse(
            b"<message xmlns:o='jabber:x:oob'><body>see</body><o:x><o:url>https://example.com/f</o:url></o:x></message>",
        )
        .expect("parses");
        assert_eq!(oob.urls, ["https://example.com/f"]);
    }

    #[test]
    fn stream_management_offers_are_left_out_of_features_however_they_are_written() {
        let features = b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><sm xmlns='urn:xmpp:sm:2'><optional/></sm><sm\n xmlns=\"urn:xmpp:sm:3\" ><optional/></sm ><x:sm xmlns:x='urn:xmpp:sm:3'/><csi xmlns='urn:xmpp:csi:0'/></stream:features>";
        let stanza = Stanza::parse(features).expect("parses");
        assert_eq!(
            String::from_utf8_lossy(&stanza.forwardable(features, None)),
            "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><csi xmlns='urn:xmpp:csi:0'/></stream:features>"
        );
        let message = b"<message><sm xmlns='urn:xmpp:sm:3'/><body>hi</body></message>";
        let stanza = Stanza::parse(message).expect("parses");
        assert_eq!(stanza.forwardable(message, None).as_ref(), &message[..]);
    }

    #[test]
    fn stream_management_is_refused_in_its_own_namespace() {
        assert_eq!(
            String::from_utf8_lossy(&stream_management_refused("urn:xmpp:sm:2")),
            "<failed xmlns='urn:xmpp:sm:2'><feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
    }

    #[test]
    fn bounces_blocked_stanzas_in_the_protocol_s_own_way() {
        let stanza = Stanza::parse(
            b"<message to='bob@chat.example' id='m7'><body>project falcon</body></message>",
        )
        .expect("parses");
        let error =
            String::from_utf8(policy_error(&stanza, "Blocked by policy <deals>")).expect("utf-8");
        assert_eq!(
            error,
            "<message type='error' from='bob@chat.example' id='m7'><error type='modify'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Blocked by policy &lt;deals&gt;</text></error></message>"
        );
        assert!(
            Stanza::parse(error.as_bytes()).is_ok(),
            "what we send parses"
        );
        assert!(
            String::from_utf8(stream_error("policy-violation", "stanza too large"))
                .expect("utf-8")
                .ends_with("</stream:stream>")
        );
    }

    proptest! {
        #[test]
        fn framing_and_parsing_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut framer = Framer::default();
            let mut rest = &bytes[..];
            for _ in 0..100 {
                match framer.next(rest) {
                    Item::Header { consumed, .. } | Item::Whitespace { consumed } | Item::Close { consumed } => rest = &rest[consumed..],
                    Item::Element { bytes, consumed } => {
                        let _ = Stanza::parse(bytes);
                        rest = &rest[consumed..];
                    }
                    _ => break,
                }
            }
        }

        #[test]
        fn any_body_text_survives_a_rewrite(original in "\\PC{0,40}", replacement in "\\PC{0,40}") {
            let bytes = format!("<message to='b@c'><body>{}</body></message>", escape(original.as_str()));
            let stanza = Stanza::parse(bytes.as_bytes()).expect("parses");
            prop_assert_eq!(stanza.body.as_deref(), Some(original.as_str()));
            let rewritten = stanza.forwardable(bytes.as_bytes(), Some(&replacement));
            let again = Stanza::parse(&rewritten).expect("rewritten parses");
            prop_assert_eq!(again.body.as_deref(), Some(replacement.as_str()));
        }
    }
}
