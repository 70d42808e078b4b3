use std::time::Duration;

use proptest::prelude::*;
use rustls_pki_types::CertificateDer;

use super::*;

fn ca() -> CertificateDer<'static> {
    CertificateDer::from(b"a CA certificate".to_vec())
}

#[test]
fn a_token_enrolls_its_connector_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = TunnelState::new(dir.path());
    let token = state
        .mint("desk-1", &ca(), Duration::from_secs(60))
        .expect("minted");
    let parsed = Token::parse(&token.text()).expect("parses");
    assert_eq!(parsed, token);
    assert_eq!(parsed.ca_pin, ca_pin(&ca()));
    assert_eq!(state.redeem(&parsed), Ok("desk-1".to_owned()));
    assert_eq!(
        state.redeem(&parsed),
        Err(TokenError::Reused("desk-1".into()))
    );
    let stored = std::fs::read_dir(dir.path().join("tokens"))
        .expect("tokens")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
        .collect::<String>();
    assert!(
        !stored.contains(&token.secret),
        "the secret is not stored: {stored}"
    );
}

#[test]
fn unknown_expired_altered_and_revoked_tokens_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = TunnelState::new(dir.path());
    let expired = state.mint("desk-1", &ca(), Duration::ZERO).expect("minted");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        state.redeem(&expired),
        Err(TokenError::Expired("desk-1".into()))
    );

    let other = TunnelState::new(&dir.path().join("elsewhere"));
    let foreign = other
        .mint("desk-1", &ca(), Duration::from_secs(60))
        .expect("minted");
    assert_eq!(state.redeem(&foreign), Err(TokenError::Unknown));

    let token = state
        .mint("desk-2", &ca(), Duration::from_secs(60))
        .expect("minted");
    let altered = Token {
        connector: "desk-3".into(),
        ..token.clone()
    };
    assert_eq!(state.redeem(&altered), Err(TokenError::WrongConnector));

    state.revoke("desk-2").expect("revoked");
    assert_eq!(
        state.redeem(&token),
        Err(TokenError::Revoked("desk-2".into()))
    );
    assert_eq!(
        state
            .mint("desk-2", &ca(), Duration::from_secs(60))
            .map(|t| t.connector),
        Err(TokenError::Revoked("desk-2".into()))
    );
    assert!(state.revoked().expect("list").contains("desk-2"));
}

#[test]
fn connector_ids_are_checked() {
    assert_eq!(check_id("site-a_01"), Ok(()));
    for bad in ["", "a.b", "a/b", "ü", &"x".repeat(64)] {
        assert_eq!(check_id(bad), Err(TokenError::BadId(bad.to_owned())));
    }
}

proptest! {
    #[test]
    fn parsing_arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = Token::parse(&text);
    }

    #[test]
    fn every_minted_shape_parses_back(id in "[a-zA-Z0-9_-]{1,63}", secret in any::<[u8; 32]>()) {
        let token = Token {
            connector: id,
            secret: URL_SAFE_NO_PAD.encode(secret),
            ca_pin: ca_pin(&ca()),
        };
        prop_assert_eq!(Token::parse(&token.text()), Ok(token));
    }
}

#[test]
fn revocations_can_come_from_a_delivered_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let delivered = dir.path().join("policy").join("revoked-connectors");
    let state = TunnelState::new(&dir.path().join("tunnel")).with_revocations(&delivered);
    assert!(state.revoked().expect("none yet").is_empty());
    let token = state
        .mint("site-b", &ca(), Duration::from_secs(60))
        .expect("minted");
    std::fs::create_dir_all(delivered.parent().expect("folder")).expect("folder");
    std::fs::write(&delivered, "site-a\n\n  site-b \n").expect("delivered");
    let revoked = state.revoked().expect("read");
    assert_eq!(revoked.len(), 2);
    assert!(revoked.contains("site-a") && revoked.contains("site-b"));
    assert_eq!(
        state.redeem(&token),
        Err(TokenError::Revoked("site-b".into()))
    );
    assert!(
        !dir.path().join("tunnel").join("revoked").exists(),
        "the tunnel folder's own list is not consulted"
    );
}

#[test]
fn a_delivered_revocation_list_replaces_the_file_for_every_clone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = TunnelState::new(dir.path());
    state.revoke("site-a").expect("revoked in the file");
    let listener_view = state.clone();
    let token = state
        .mint("site-b", &ca(), Duration::from_secs(60))
        .expect("minted");
    state.deliver_revocations(HashSet::from(["site-b".to_owned()]));
    assert_eq!(
        listener_view.revoked().expect("delivered"),
        HashSet::from(["site-b".to_owned()]),
        "the delivered list alone counts, in a clone made before it came"
    );
    assert_eq!(
        listener_view.redeem(&token),
        Err(TokenError::Revoked("site-b".into()))
    );
    state.deliver_revocations(HashSet::new());
    assert!(
        listener_view.revoked().expect("delivered").is_empty(),
        "a connector taken off the delivered list is served again"
    );
}
