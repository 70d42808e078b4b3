use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::tunnel::trust::connector_request;

const DAY: Duration = Duration::from_secs(86_400);

/// The authority of a tenant whose tunnel folder is `dir`, signing for 30 days.
fn authority(dir: &Path, renewal_grace: Duration) -> Authority {
    let state = TunnelState::new(dir);
    Authority {
        ca: Arc::new(TunnelCa::generate("acme").expect("CA")),
        tokens: Arc::new(state.clone()),
        state,
        lifetime: 30 * DAY,
        renewal_grace,
    }
}

/// What a connector sends: its request (PEM) and, when enrolling, its token.
fn message(token: Option<&str>, request: &str) -> Vec<u8> {
    serde_json::to_vec(&Request {
        token: token.map(str::to_owned),
        request: request.to_owned(),
    })
    .expect("JSON")
}

fn request(id: &str) -> String {
    connector_request(id).expect("request").1
}

/// Connector `id`'s certificate from `ca`, begun `age` ago and valid for `life` in all.
fn presented(ca: &TunnelCa, id: &str, age: Duration, life: Duration) -> Presented {
    let start = SystemTime::now() - age;
    let csr = read_request(&request(id)).expect("request");
    Presented {
        id: id.to_owned(),
        cert: ca
            .sign_between(csr, id, start, start + life)
            .expect("signed"),
    }
}

#[tokio::test]
async fn a_request_that_cannot_be_read_does_not_spend_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = authority(dir.path(), Duration::ZERO);
    let token = authority
        .state
        .mint(
            "desk-1",
            authority.ca.certificate(),
            Duration::from_secs(600),
        )
        .expect("token");
    let broken = authority
        .decide(
            &message(Some(&token.text()), "not a certificate request"),
            None,
        )
        .await
        .expect_err("refused");
    assert!(matches!(broken, EnrollError::Trust(_)), "{broken}");

    let (id, certificate) = authority
        .decide(&message(Some(&token.text()), &request("desk-1")), None)
        .await
        .expect("the token still enrolls");
    assert_eq!(id, "desk-1");
    assert!(certificate.contains("BEGIN CERTIFICATE"));
}

#[tokio::test]
async fn a_certificate_renews_only_in_the_last_third_of_its_life() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = authority(dir.path(), Duration::ZERO);
    let young = presented(&authority.ca, "desk-1", 10 * DAY, 30 * DAY);
    let early = authority
        .decide(&message(None, &request("desk-1")), Some(&young))
        .await
        .expect_err("too early");
    assert!(matches!(early, EnrollError::TooEarly { .. }), "{early}");
    assert!(
        early.to_string().contains("desk-1 may renew from"),
        "{early}"
    );
    assert_eq!(early.reason(), "renewal_too_early");

    let due = presented(&authority.ca, "desk-1", 21 * DAY, 30 * DAY);
    let (id, _) = authority
        .decide(&message(None, &request("desk-1")), Some(&due))
        .await
        .expect("renewed in the last third");
    assert_eq!(id, "desk-1");
}

#[tokio::test]
async fn once_renewed_an_older_certificate_cannot_renew_even_within_its_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grace = Duration::from_secs(600);
    let authority = authority(dir.path(), grace);
    let real = presented(&authority.ca, "desk-1", 21 * DAY, 30 * DAY);
    let copy = Presented {
        id: real.id.clone(),
        cert: real.cert.clone(),
    };
    let generations = authority.state.generations();
    assert_eq!(
        generations
            .check("desk-1", &copy.cert, unix_now(), Duration::ZERO)
            .expect("read"),
        Ok(()),
        "before the renewal the copy is as good as the original"
    );

    authority
        .decide(&message(None, &request("desk-1")), Some(&real))
        .await
        .expect("the real connector renews");
    let refused = authority
        .decide(&message(None, &request("desk-1")), Some(&copy))
        .await
        .expect_err("the copy cannot renew, though it may still connect for a while");
    assert!(matches!(refused, EnrollError::Superseded(_)), "{refused}");
    assert_eq!(refused.reason(), "superseded");
    assert_eq!(
        generations
            .check("desk-1", &copy.cert, unix_now(), grace)
            .expect("read"),
        Ok(()),
        "within the grace the old certificate still connects (the connector's own \
         connections move over)"
    );
    assert!(
        generations
            .check("desk-1", &copy.cert, unix_now() + grace.as_secs(), grace)
            .expect("read")
            .is_err(),
        "and not after it: the listener asks the same record"
    );
}

#[tokio::test]
async fn a_connector_that_lost_its_renewal_asks_again_with_the_same_key_and_no_one_else_can() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = authority(dir.path(), Duration::from_secs(600));
    let current = presented(&authority.ca, "desk-1", 21 * DAY, 30 * DAY);
    let key = rcgen::KeyPair::generate().expect("key");
    let again = crate::tunnel::trust::request_for(&key, "desk-1").expect("request");
    authority
        .decide(&message(None, &again), Some(&current))
        .await
        .expect("renewed, and the answer is lost on its way");
    let copy = Presented {
        id: current.id.clone(),
        cert: current.cert.clone(),
    };
    authority
        .decide(&message(None, &again), Some(&current))
        .await
        .expect("the same key asks again with the certificate it still holds");
    let thief = authority
        .decide(&message(None, &request("desk-1")), Some(&copy))
        .await
        .expect_err("another key with the same old certificate");
    assert!(matches!(thief, EnrollError::Superseded(_)), "{thief}");
}
