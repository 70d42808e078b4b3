//! TLS record protection after the handshake, for connections whose handshake rustls made
//! and whose traffic secrets it handed over (rustls's kernel connection API). Pure: no I/O.
//! RFC 8446 §5 (TLS 1.3) and RFC 5246 §6.2 with RFC 5288 and RFC 7905 (TLS 1.2 AEAD).
//!
//! Invariants:
//! - a direction keeps only its raw key, IV and sequence number (about 60 bytes); the AEAD's
//!   key schedule is expanded for each record and dropped with it, so an idle connection
//!   holds no expanded key. Raw keys are zeroed when dropped (rustls's `AeadKey`);
//! - a sequence number is used for one record only, and a direction refuses to seal or open
//!   a record once its sequence numbers are exhausted;
//! - a received record is checked against the protocol's length limits before it is
//!   decrypted, and its content against them after; anything that fails gives a
//!   [`RecordError`] that names the alert to send, never a panic.

use ring::aead::{
    AES_128_GCM, AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey,
};
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::{AlertDescription, ConnectionTrafficSecrets, ContentType};

/// Bytes in a record header: content type, version, length.
pub const HEADER_LEN: usize = 5;

/// Most plaintext bytes in one record.
pub const MAX_PLAINTEXT: usize = 1 << 14;

/// Bytes of an AEAD tag (all three suites).
const TAG_LEN: usize = 16;

/// Bytes of the explicit nonce that TLS 1.2 AES-GCM records carry.
const EXPLICIT_NONCE_LEN: usize = 8;

/// The record version written in headers (TLS 1.2, also TLS 1.3's legacy value).
const RECORD_VERSION: [u8; 2] = [0x03, 0x03];

/// The protocol version a connection negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// TLS 1.2 with an AEAD suite.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl Version {
    /// Most bytes after a record's header (RFC 8446 §5.2, RFC 5246 §6.2.3).
    fn max_ciphertext(self) -> usize {
        match self {
            Self::Tls12 => MAX_PLAINTEXT + 2048,
            Self::Tls13 => MAX_PLAINTEXT + 256,
        }
    }
}

/// Why a record could not be protected or accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The header does not start a TLS record.
    #[error("the peer sent bytes that are not a TLS record (version {0:#06x})")]
    NotTls(u16),
    /// A record is longer than the protocol allows.
    #[error("the peer sent a TLS record of {0} bytes, more than the protocol allows")]
    Overflow(usize),
    /// A record is shorter than its protection needs.
    #[error("the peer sent a TLS record too short to be protected")]
    TooShort,
    /// A record's type is not allowed once the handshake is done.
    #[error("the peer sent a TLS record of type {0:?}, which is not allowed after the handshake")]
    UnexpectedType(ContentType),
    /// Authentication failed: the record was altered or not made with this key.
    #[error("a TLS record failed authentication (bad_record_mac)")]
    BadMac,
    /// A TLS 1.3 record's content is all padding.
    #[error("the peer sent a TLS 1.3 record with no content type")]
    NoContentType,
    /// This direction has used every sequence number.
    #[error("the TLS connection has used all its sequence numbers")]
    SequenceExhausted,
    /// The handshake agreed on protection this layer does not provide.
    #[error("the negotiated TLS cipher suite is not supported after the handshake")]
    UnsupportedSuite,
}

impl RecordError {
    /// The alert that tells the peer why (RFC 8446 §6.2).
    pub fn alert(&self) -> AlertDescription {
        match self {
            Self::NotTls(_) | Self::TooShort => AlertDescription::DecodeError,
            Self::Overflow(_) => AlertDescription::RecordOverflow,
            Self::UnexpectedType(_) | Self::NoContentType => AlertDescription::UnexpectedMessage,
            Self::BadMac => AlertDescription::BadRecordMac,
            Self::SequenceExhausted | Self::UnsupportedSuite => AlertDescription::InternalError,
        }
    }
}

/// The length of the record at the front of `received`, header included, once its header
/// has arrived; `None` while fewer than [`HEADER_LEN`] bytes have.
pub fn record_len(version: Version, received: &[u8]) -> Result<Option<usize>, RecordError> {
    let Some(header) = received.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if header[1] != 0x03 {
        return Err(RecordError::NotTls(u16::from_be_bytes([
            header[1], header[2],
        ])));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > version.max_ciphertext() {
        return Err(RecordError::Overflow(len));
    }
    Ok(Some(HEADER_LEN + len))
}

/// One direction's record protection: key, IV and next sequence number.
pub struct Direction {
    version: Version,
    algorithm: &'static Algorithm,
    key: AeadKey,
    iv: Iv,
    seq: u64,
}

impl Direction {
    /// The direction that rustls handed over, at sequence number `seq`.
    pub fn new(
        version: Version,
        (seq, secrets): (u64, ConnectionTrafficSecrets),
    ) -> Result<Self, RecordError> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => return Err(RecordError::UnsupportedSuite),
        };
        if key.as_ref().len() != algorithm.key_len() {
            return Err(RecordError::UnsupportedSuite);
        }
        Ok(Self {
            version,
            algorithm,
            key,
            iv,
            seq,
        })
    }

    /// The sequence number of the next record.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether records carry an explicit nonce (TLS 1.2 AES-GCM, RFC 5288).
    fn explicit_nonce(&self) -> bool {
        self.version == Version::Tls12 && *self.algorithm != CHACHA20_POLY1305
    }

    /// This record's key, expanded for it alone.
    fn expanded(&self) -> Result<LessSafeKey, RecordError> {
        UnboundKey::new(self.algorithm, self.key.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| RecordError::UnsupportedSuite)
    }

    /// Takes the next sequence number, and gives it with the nonce it makes: the IV XORed
    /// with the number (RFC 8446 §5.3; rustls makes TLS 1.2 nonces the same way).
    fn next(&mut self) -> Result<(u64, [u8; 12]), RecordError> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(RecordError::SequenceExhausted)?;
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(self.iv.as_ref());
        for (byte, seq_byte) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *byte ^= seq_byte;
        }
        Ok((seq, nonce))
    }

    /// Appends `plaintext` (at most [`MAX_PLAINTEXT`] bytes) to `out` as one protected
    /// record of `content_type`; on error `out` is as it was.
    pub fn seal(
        &mut self,
        content_type: ContentType,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(RecordError::Overflow(plaintext.len()));
        }
        let key = self.expanded()?;
        let (seq, nonce) = self.next()?;
        let start = out.len();
        let sealed = match self.version {
            Version::Tls13 => {
                let len = plaintext.len() + 1 + TAG_LEN;
                push_header(out, ContentType::ApplicationData, len);
                out.extend_from_slice(plaintext);
                out.push(u8::from(content_type));
                let header: [u8; HEADER_LEN] = header_of(out, start);
                seal_tail(&key, nonce, &header, out, start + HEADER_LEN)
            }
            Version::Tls12 => {
                let explicit = if self.explicit_nonce() {
                    EXPLICIT_NONCE_LEN
                } else {
                    0
                };
                push_header(out, content_type, explicit + plaintext.len() + TAG_LEN);
                out.extend_from_slice(&nonce[4..4 + explicit]);
                out.extend_from_slice(plaintext);
                let aad = tls12_aad(seq, content_type, plaintext.len());
                seal_tail(&key, nonce, &aad, out, start + HEADER_LEN + explicit)
            }
        };
        if sealed.is_err() {
            out.truncate(start);
        }
        sealed
    }

    /// Authenticates and decrypts `record` (a whole record, header included, as
    /// [`record_len`] measured it) in place; gives its content type and plaintext.
    pub fn open<'r>(
        &mut self,
        record: &'r mut [u8],
    ) -> Result<(ContentType, &'r [u8]), RecordError> {
        if record.len() < HEADER_LEN {
            return Err(RecordError::TooShort);
        }
        let (header, body) = record.split_at_mut(HEADER_LEN);
        let outer = ContentType::from(header[0]);
        match self.version {
            Version::Tls13 => {
                if outer != ContentType::ApplicationData {
                    return Err(RecordError::UnexpectedType(outer));
                }
                if body.len() < TAG_LEN + 1 {
                    return Err(RecordError::TooShort);
                }
                let key = self.expanded()?;
                let (_, nonce) = self.next()?;
                let inner = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&*header),
                        body,
                    )
                    .map_err(|_| RecordError::BadMac)?;
                let content_len = inner
                    .iter()
                    .rposition(|byte| *byte != 0)
                    .ok_or(RecordError::NoContentType)?;
                if content_len > MAX_PLAINTEXT {
                    return Err(RecordError::Overflow(content_len));
                }
                Ok((ContentType::from(inner[content_len]), &inner[..content_len]))
            }
            Version::Tls12 => {
                if !matches!(
                    outer,
                    ContentType::ApplicationData | ContentType::Alert | ContentType::Handshake
                ) {
                    return Err(RecordError::UnexpectedType(outer));
                }
                let explicit = if self.explicit_nonce() {
                    EXPLICIT_NONCE_LEN
                } else {
                    0
                };
                if body.len() < explicit + TAG_LEN {
                    return Err(RecordError::TooShort);
                }
                let key = self.expanded()?;
                let (seq, mut nonce) = self.next()?;
                let (explicit_nonce, sealed) = body.split_at_mut(explicit);
                if explicit > 0 {
                    nonce[4..].copy_from_slice(explicit_nonce);
                }
                let aad = tls12_aad(seq, outer, sealed.len() - TAG_LEN);
                let plaintext = key
                    .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), sealed)
                    .map_err(|_| RecordError::BadMac)?;
                if plaintext.len() > MAX_PLAINTEXT {
                    return Err(RecordError::Overflow(plaintext.len()));
                }
                Ok((outer, &*plaintext))
            }
        }
    }
}

/// Appends a record header; `len` is at most [`MAX_PLAINTEXT`] plus the protection's bytes.
fn push_header(out: &mut Vec<u8>, content_type: ContentType, len: usize) {
    out.push(u8::from(content_type));
    out.extend_from_slice(&RECORD_VERSION);
    out.extend_from_slice(&(len as u16).to_be_bytes());
}

fn header_of(out: &[u8], start: usize) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&out[start..start + HEADER_LEN]);
    header
}

/// TLS 1.2's additional data: sequence number, type, version, plaintext length.
fn tls12_aad(seq: u64, content_type: ContentType, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = u8::from(content_type);
    aad[9..11].copy_from_slice(&RECORD_VERSION);
    // A plaintext is at most 2^14 bytes (checked by the caller or by `record_len`).
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

/// Encrypts `out[from..]` in place and appends its tag.
fn seal_tail(
    key: &LessSafeKey,
    nonce: [u8; 12],
    aad: &[u8],
    out: &mut Vec<u8>,
    from: usize,
) -> Result<(), RecordError> {
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[from..],
        )
        .map_err(|_| RecordError::UnsupportedSuite)?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

#[cfg(test)]
mod tests;
