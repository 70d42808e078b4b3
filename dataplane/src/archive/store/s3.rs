//! The tenant's S3 (or S3-compatible) bucket through aws-sdk-s3, with the ring-based rustls
//! HTTP client (one crypto provider across the workspace).
//!
//! Invariants: every put carries a SHA-256 content checksum (the store rejects a damaged
//! upload), the tenant's server-side encryption, and, when configured, Object Lock retention;
//! objects above [`MULTIPART_THRESHOLD`] go up in parts, each checksummed; no request waits
//! for an answer longer than the configured timeout.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::{ByteStream, DateTime as AwsDateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockEnabled,
    ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode, ServerSideEncryption,
};
use aws_smithy_http_client::tls;

use super::{Encryption, PutOptions};
use crate::archive::error::ArchiveError;

/// Objects larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 16 << 20;
/// Part size for multipart uploads.
pub const PART_SIZE: usize = 8 << 20;

/// Where the bucket is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Endpoint of an S3-compatible store; AWS when absent.
    pub endpoint: Option<String>,
    /// Static credentials (access key id, secret); the default AWS chain when absent
    /// (environment, web identity for IRSA, pod identity, instance metadata).
    pub credentials: Option<(String, String)>,
    /// How long connecting, and waiting for an answer, may take ([`DEFAULT_TIMEOUT`] when
    /// absent); a whole attempt (an upload included) may take ten times as long.
    pub timeout: Option<Duration>,
}

/// How long a request may wait to connect, or for the store's answer, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// An S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

fn store_error(key: &str, error: impl std::error::Error) -> ArchiveError {
    ArchiveError::Store {
        key: key.to_owned(),
        message: DisplayErrorContext(error).to_string(),
    }
}

impl S3Store {
    /// A client for the bucket.
    pub async fn connect(config: &S3Config) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        // A store that accepts a request and never answers must not stall shipping: every
        // request is bounded, and a timed-out request fails and is retried like any other.
        let timeout = config.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .operation_attempt_timeout(timeout * 10)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .timeout_config(timeouts)
            .http_client(http);
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((key, secret)) = &config.credentials {
            loader =
                loader.credentials_provider(Credentials::new(key, secret, None, None, "imgate"));
        }
        let shared = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.endpoint.is_some())
            .build();
        Self {
            client: Client::from_conf(s3),
            bucket: config.bucket.clone(),
        }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub(super) async fn probe(&self, locked: bool) -> Result<(), ArchiveError> {
        let bucket = format!("bucket {}", self.bucket);
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| store_error(&bucket, e))?;
        if !locked {
            return Ok(());
        }
        let not_locked = || {
            ArchiveError::Store {
            key: bucket.clone(),
            message: "Object Lock is not enabled, so records would not be kept as WORM; ship to a bucket created with Object Lock enabled".into(),
        }
        };
        let lock = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(lock) => lock,
            Err(error)
                if error.as_service_error().and_then(|e| e.meta().code())
                    == Some("ObjectLockConfigurationNotFoundError") =>
            {
                return Err(not_locked());
            }
            Err(error) => return Err(store_error(&bucket, error)),
        };
        let enabled = lock
            .object_lock_configuration()
            .and_then(|c| c.object_lock_enabled());
        if enabled != Some(&ObjectLockEnabled::Enabled) {
            return Err(not_locked());
        }
        Ok(())
    }

    /// The SDK client, for administrative calls the archive does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(super) async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        options: &PutOptions,
    ) -> Result<(), ArchiveError> {
        if body.len() > MULTIPART_THRESHOLD {
            return self.put_multipart(key, body, options).await;
        }
        let headers = Headers::from(options);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .set_object_lock_mode(headers.mode)
            .set_object_lock_retain_until_date(headers.until)
            .set_server_side_encryption(headers.encryption)
            .set_ssekms_key_id(headers.kms_key)
            .send()
            .await
            .map_err(|e| store_error(key, e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &str,
        body: Vec<u8>,
        options: &PutOptions,
    ) -> Result<(), ArchiveError> {
        let headers = Headers::from(options);
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .set_object_lock_mode(headers.mode)
            .set_object_lock_retain_until_date(headers.until)
            .set_server_side_encryption(headers.encryption)
            .set_ssekms_key_id(headers.kms_key)
            .send()
            .await
            .map_err(|e| store_error(key, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_owned();
        let mut parts = Vec::new();
        for (index, chunk) in body.chunks(PART_SIZE).enumerate() {
            let number = index as i32 + 1;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await;
            let part = match part {
                Ok(part) => part,
                Err(error) => {
                    let _ = self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .send()
                        .await;
                    return Err(store_error(key, error));
                }
            };
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .set_checksum_sha256(part.checksum_sha256().map(str::to_owned))
                    .build(),
            );
        }
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        if let Err(error) = completed {
            // Some S3-compatible stores complete the upload but answer in a shape the SDK does
            // not parse; the object itself is the proof.
            let head = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await;
            let complete = head.is_ok_and(|h| {
                h.content_length() == Some(body.len() as i64)
                    && h.e_tag().is_some_and(|t| t.contains('-'))
            });
            if !complete {
                return Err(store_error(key, error));
            }
            tracing::warn!(key, error = %DisplayErrorContext(&error), "the store's answer to completing a multipart upload was unreadable, but the object is complete");
        }
        // Not every store carries the retention given at creation over to the completed object;
        // setting it again (the same date) is allowed even in COMPLIANCE mode.
        if let Some(retention) = &options.retention {
            self.client
                .put_object_retention()
                .bucket(&self.bucket)
                .key(key)
                .retention(
                    ObjectLockRetention::builder()
                        .mode(retention_mode(retention.compliance))
                        .retain_until_date(AwsDateTime::from_millis(
                            retention.until.timestamp_millis(),
                        ))
                        .build(),
                )
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .send()
                .await
                .map_err(|e| store_error(key, e))?;
        }
        Ok(())
    }

    pub(super) async fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| store_error(key, e))?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| ArchiveError::Store {
                key: key.to_owned(),
                message: e.to_string(),
            })?;
        Ok(bytes.into_bytes().to_vec())
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| store_error(prefix, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        Ok(keys)
    }

    pub(super) async fn set_legal_hold(&self, key: &str, on: bool) -> Result<(), ArchiveError> {
        let status = if on {
            ObjectLockLegalHoldStatus::On
        } else {
            ObjectLockLegalHoldStatus::Off
        };
        self.client
            .put_object_legal_hold()
            .bucket(&self.bucket)
            .key(key)
            .legal_hold(ObjectLockLegalHold::builder().status(status).build())
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(|e| store_error(key, e))?;
        Ok(())
    }
}

/// The Object Lock and encryption headers of a put.
struct Headers {
    mode: Option<ObjectLockMode>,
    until: Option<AwsDateTime>,
    encryption: Option<ServerSideEncryption>,
    kms_key: Option<String>,
}

impl From<&PutOptions> for Headers {
    fn from(options: &PutOptions) -> Self {
        let (encryption, kms_key) = match &options.encryption {
            Some(Encryption::S3) => (Some(ServerSideEncryption::Aes256), None),
            Some(Encryption::Kms(key)) => (Some(ServerSideEncryption::AwsKms), Some(key.clone())),
            None => (None, None),
        };
        Self {
            mode: options.retention.as_ref().map(|r| lock_mode(r.compliance)),
            until: options
                .retention
                .as_ref()
                .map(|r| AwsDateTime::from_millis(r.until.timestamp_millis())),
            encryption,
            kms_key,
        }
    }
}

fn retention_mode(compliance: bool) -> ObjectLockRetentionMode {
    if compliance {
        ObjectLockRetentionMode::Compliance
    } else {
        ObjectLockRetentionMode::Governance
    }
}

fn lock_mode(compliance: bool) -> ObjectLockMode {
    if compliance {
        ObjectLockMode::Compliance
    } else {
        ObjectLockMode::Governance
    }
}
