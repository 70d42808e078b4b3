//! Redeeming a token against the enrollment Secret, through the API server.

use std::future::Future;
use std::pin::Pin;

use imgate_dataplane::tunnel::tokens::{Redeemer, Token, TokenError};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use super::{EXPIRES, REDEEMED, TOKEN_KEY};

/// How many times a redemption reads again after losing a race for the Secret.
const ATTEMPTS: usize = 3;

/// The enrollment Secret of the dataplane's namespace, as a [`Redeemer`].
pub struct SecretTokens {
    secrets: Api<Secret>,
    name: String,
    dataplane: String,
}

fn store(error: kube::Error) -> TokenError {
    TokenError::Store(error.to_string())
}

impl SecretTokens {
    /// Secret `name` in the namespace `client` defaults to (the pod's own); `dataplane` names
    /// this dataplane in the record of who redeemed a token.
    pub fn new(client: Client, name: &str, dataplane: &str) -> Self {
        Self {
            secrets: Api::default_namespaced(client),
            name: name.to_owned(),
            dataplane: dataplane.to_owned(),
        }
    }

    /// Checks `token` against `secret`, as read: the connector it enrolls.
    fn check(secret: &Secret, token: &Token, now: Timestamp) -> Result<String, TokenError> {
        let minted = secret
            .data
            .as_ref()
            .and_then(|data| data.get(TOKEN_KEY))
            .and_then(|text| std::str::from_utf8(&text.0).ok())
            .and_then(|text| Token::parse(text).ok())
            .ok_or(TokenError::Unknown)?;
        if !minted.same_secret(token) {
            return Err(TokenError::Unknown);
        }
        if minted.connector != token.connector {
            return Err(TokenError::WrongConnector);
        }
        let annotations = secret.annotations();
        if annotations.contains_key(REDEEMED) {
            return Err(TokenError::Reused(token.connector.clone()));
        }
        let expires = annotations
            .get(EXPIRES)
            .and_then(|at| at.parse::<Timestamp>().ok());
        if expires.is_none_or(|at| at < now) {
            return Err(TokenError::Expired(token.connector.clone()));
        }
        Ok(token.connector.clone())
    }

    async fn redeem_once(&self, token: &Token) -> Result<String, TokenError> {
        for _ in 0..ATTEMPTS {
            let Some(mut secret) = self.secrets.get_opt(&self.name).await.map_err(store)? else {
                return Err(TokenError::Unknown);
            };
            let now = Timestamp::now();
            let connector = Self::check(&secret, token, now)?;
            secret
                .annotations_mut()
                .insert(REDEEMED.into(), format!("{now} by {}", self.dataplane));
            match self
                .secrets
                .replace(&self.name, &PostParams::default(), &secret)
                .await
            {
                Ok(_) => return Ok(connector),
                Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                Err(error) => return Err(store(error)),
            }
        }
        Err(TokenError::Store(format!(
            "Secret {} kept changing while the token was redeemed",
            self.name
        )))
    }
}

impl Redeemer for SecretTokens {
    fn redeem<'a>(
        &'a self,
        token: &'a Token,
    ) -> Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + 'a>> {
        Box::pin(self.redeem_once(token))
    }
}
