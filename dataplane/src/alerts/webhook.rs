//! Alerts as a signed webhook: a JSON body, `X-Imgate-Timestamp` (Unix seconds) and
//! `X-Imgate-Signature: v1=<hex>`, the HMAC-SHA256 under the tenant's secret of the
//! timestamp, a dot and the body.
//!
//! Invariants: the signature covers the exact bytes sent and the time they were signed, so
//! a receiver that checks it (with [`verify`]) and refuses old timestamps takes no forged or
//! replayed request; every notice carries its alert's `id` and `status`, so a receiver that
//! sees the same pair twice (only after imgate stopped between the receiver's answer and
//! recording it) can drop the copy.

use ring::hmac;
use serde_json::{Value, json};

use super::outbox::Notice;

/// The header holding the signing time.
pub const TIMESTAMP_HEADER: &str = "x-imgate-timestamp";
/// The header holding the signature.
pub const SIGNATURE_HEADER: &str = "x-imgate-signature";

/// The body for `notices`.
pub fn body(tenant: &str, notices: &[Notice]) -> Vec<u8> {
    let alerts: Vec<Value> = notices.iter().map(notice_json).collect();
    let body = json!({"version": 1, "tenant": tenant, "alerts": alerts});
    serde_json::to_vec(&body).unwrap_or_else(|e| unreachable!("JSON values serialize: {e}"))
}

/// One notice as JSON.
pub fn notice_json(notice: &Notice) -> Value {
    let alert = &notice.alert;
    let mut value = json!({
        "id": alert.id,
        "status": notice.status.as_str(),
        "rule": alert.rule,
        "severity": super::severity_name(alert.severity),
        "sender": alert.sender,
        "protocol": alert.protocol.as_str(),
        "conversation": alert.conv,
        "record": alert.record,
        "first": alert.first,
        "last": alert.last,
        "closes": alert.closes,
        "count": alert.count,
        "action": alert.action.as_str(),
        "summary": super::summary(alert),
    });
    if let Some(text) = &alert.text {
        value["text"] = json!(text);
    }
    value
}

/// The signature header's value for `body` signed at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1={}", hex::encode(context.sign().as_ref()))
}

/// Whether `signature` (the header's value) signs `body` at `timestamp` under `secret`, and
/// `timestamp` is within `tolerance` seconds of `now`. Compares in constant time.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: i64,
    tolerance: i64,
) -> bool {
    let Ok(at) = timestamp.parse::<i64>() else {
        return false;
    };
    if (now - at).abs() > tolerance {
        return false;
    }
    let Some(tag) = signature
        .strip_prefix("v1=")
        .and_then(|hex_tag| hex::decode(hex_tag).ok())
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    hmac::verify(&key, &message, &tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_time_and_key() {
        let body = br#"{"version":1}"#;
        let signature = sign(b"key", 1_800_000_000, body);
        assert!(signature.starts_with("v1=") && signature.len() == 3 + 64);
        let check = |key: &[u8], at: &str, body: &[u8], now: i64| {
            verify(key, at, body, &signature, now, 300)
        };
        assert!(check(b"key", "1800000000", body, 1_800_000_100));
        assert!(!check(b"other", "1800000000", body, 1_800_000_100), "key");
        assert!(!check(b"key", "1800000001", body, 1_800_000_100), "time");
        assert!(
            !check(b"key", "1800000000", b"{\"version\":2}", 1_800_000_100),
            "body"
        );
        assert!(!check(b"key", "1800000000", body, 1_800_000_301), "too old");
        assert!(!verify(
            b"key",
            "1800000000",
            body,
            "v1=zz",
            1_800_000_000,
            300
        ));
    }
}
