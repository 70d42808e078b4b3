//! Minting into, and redeeming from, the enrollment Secret, against the scripted API server
//! under the dataplanes' RBAC.

use std::time::Duration;

use http::{Method, StatusCode};
use imgate_dataplane::tunnel::tokens::{Redeemer, Token, TokenError};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::*;
use crate::reconcile::chart_rbac::Subject;
use crate::reconcile::fixtures::{ApiServer, Reply, pair_as};

const NAMESPACE: &str = "imgate-acme";
const PATH: &str = "/api/v1/namespaces/imgate-acme/secrets/connector-enrollment";
const PIN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A token minted for `connector`, and the Secret holding it as the API server returns it.
fn minted(connector: &str, now: Timestamp) -> (Token, Value) {
    let Minted { data, annotations } = mint(connector, PIN, now).expect("minted");
    let text = String::from_utf8(data[TOKEN_KEY].0.clone()).expect("UTF-8");
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "connector-enrollment", "namespace": NAMESPACE,
                     "resourceVersion": "7", "annotations": annotations},
        "type": "Opaque",
        "data": data,
    });
    (Token::parse(&text).expect("a token"), secret)
}

fn with_annotation(mut secret: Value, key: &str, value: &str) -> Value {
    secret["metadata"]["annotations"][key] = value.into();
    secret
}

/// Redeems `token` while `script` plays the API server; a request the script does not
/// answer (a write where none is expected) leaves the redemption hanging, and fails here.
async fn redeem<F, Fut>(token: &Token, script: F) -> Result<String, TokenError>
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (client, server) = pair_as(Subject::Dataplane, NAMESPACE);
    let tokens = SecretTokens::new(client, "connector-enrollment", "dataplane-1");
    let redeemed = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(tokens.redeem(token), script(server)).0
    });
    redeemed
        .await
        .expect("the redemption made no request the script did not answer")
}

/// Redeems `token` where the API server answers its read with `reply` (and nothing else).
async fn redeem_after_one_read(token: &Token, reply: Reply) -> Result<String, TokenError> {
    redeem(token, |mut server| async move {
        server.expect(Method::GET, PATH, reply).await;
    })
    .await
}

/// Scripts a read answered with `secret` and an update refused with `status` and `reason`.
async fn read_then_refuse_the_update(
    server: &mut ApiServer,
    secret: Value,
    status: StatusCode,
    reason: &'static str,
) {
    server
        .expect(Method::GET, PATH, Reply::Json(StatusCode::OK, secret))
        .await;
    server
        .expect(Method::PUT, PATH, Reply::Fail(status, reason))
        .await;
}

#[test]
fn minted_tokens_name_their_connector_pin_and_expiry() {
    let now = Timestamp::from_second(1_800_000_000).expect("a time");
    let Minted { data, annotations } = mint("site-a", PIN, now).expect("minted");
    let text = String::from_utf8(data[TOKEN_KEY].0.clone()).expect("UTF-8");
    let token = Token::parse(&text).expect("a token");
    assert_eq!(
        (token.connector.as_str(), token.ca_pin.as_str()),
        ("site-a", PIN)
    );
    assert_eq!(annotations[CONNECTOR], "site-a");
    assert_eq!(annotations[EXPIRES], "2027-01-22T08:00:00Z");
    let again = mint("site-a", PIN, now).expect("minted");
    assert_ne!(
        again.data[TOKEN_KEY], data[TOKEN_KEY],
        "every token has its own secret"
    );
    assert!(matches!(
        mint("site a", PIN, now),
        Err(TokenError::BadId(_))
    ));
}

#[tokio::test]
async fn a_token_is_redeemed_by_an_update_carrying_the_version_read() {
    let (token, secret) = minted("site-a", Timestamp::now());
    let redeemed = redeem(&token, |mut server| async move {
        server
            .expect(
                Method::GET,
                PATH,
                Reply::Json(StatusCode::OK, secret.clone()),
            )
            .await;
        let update = server.expect(Method::PUT, PATH, Reply::Echo).await;
        assert_eq!(update.body["metadata"]["resourceVersion"], "7");
        assert_eq!(update.body["data"], secret["data"], "the token is kept");
        let by = update.body["metadata"]["annotations"][REDEEMED]
            .as_str()
            .expect("marked redeemed");
        assert!(by.ends_with(" by dataplane-1"), "{by}");
    })
    .await;
    assert_eq!(redeemed, Ok("site-a".to_owned()));
}

#[tokio::test]
async fn the_dataplane_that_loses_the_race_refuses_the_token_as_used() {
    let (token, secret) = minted("site-a", Timestamp::now());
    let won = with_annotation(secret.clone(), REDEEMED, "now by dataplane-0");
    let redeemed = redeem(&token, |mut server| async move {
        read_then_refuse_the_update(&mut server, secret, StatusCode::CONFLICT, "Conflict").await;
        server
            .expect(Method::GET, PATH, Reply::Json(StatusCode::OK, won))
            .await;
    })
    .await;
    assert_eq!(redeemed, Err(TokenError::Reused("site-a".into())));
}

#[tokio::test]
async fn used_expired_foreign_and_altered_tokens_are_refused_without_a_write() {
    let now = Timestamp::now();
    let (token, secret) = minted("site-a", now);
    let (foreign, _) = minted("site-a", now);
    let altered = Token {
        connector: "site-b".into(),
        ..token.clone()
    };
    let used = with_annotation(secret.clone(), REDEEMED, "then by dataplane-0");
    let expired = with_annotation(secret.clone(), EXPIRES, "2020-01-01T00:00:00Z");
    let cases = [
        (&token, used, TokenError::Reused("site-a".into())),
        (&token, expired, TokenError::Expired("site-a".into())),
        (&foreign, secret.clone(), TokenError::Unknown),
        (&altered, secret, TokenError::WrongConnector),
    ];
    for (token, stored, refusal) in cases {
        let redeemed = redeem_after_one_read(token, Reply::Json(StatusCode::OK, stored)).await;
        assert_eq!(redeemed, Err(refusal));
    }
}

#[tokio::test]
async fn no_secret_means_no_such_token() {
    let (token, _) = minted("site-a", Timestamp::now());
    let redeemed =
        redeem_after_one_read(&token, Reply::Fail(StatusCode::NOT_FOUND, "NotFound")).await;
    assert_eq!(redeemed, Err(TokenError::Unknown));
}

#[tokio::test]
async fn an_api_server_that_fails_refuses_the_enrollment_and_leaves_the_token_unused() {
    let (token, secret) = minted("site-a", Timestamp::now());
    let unavailable = redeem_after_one_read(
        &token,
        Reply::Fail(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
    )
    .await;
    assert!(
        matches!(&unavailable, Err(TokenError::Store(message)) if message.contains("ServiceUnavailable")),
        "{unavailable:?}"
    );
    let refused_write = redeem(&token, |mut server| async move {
        read_then_refuse_the_update(&mut server, secret, StatusCode::FORBIDDEN, "Forbidden").await;
    })
    .await;
    assert!(
        matches!(&refused_write, Err(TokenError::Store(message)) if message.contains("Forbidden")),
        "{refused_write:?}"
    );
}
