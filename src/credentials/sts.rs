//! STS: the one call the proxy makes (AssumeRole), what it returns, and the
//! aws-sdk-sts client that makes it. Secrets here never print.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::RoleRequest;

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself; call only where it is sent to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("** redacted **")
    }
}

/// Temporary credentials as STS issued them.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    pub expiration: SystemTime,
    /// When the proxy received them; served as `LastUpdated`.
    pub last_updated: SystemTime,
    /// The response bodies, rendered on first use so that a cached answer
    /// costs a reference count, not a formatting pass.
    pub rendered: Rendered,
}

/// Response bodies that hold the secrets: written once, never printed.
#[derive(Clone, Default)]
pub struct Rendered {
    pub legacy: std::sync::OnceLock<bytes::Bytes>,
    pub extended: std::sync::OnceLock<bytes::Bytes>,
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("** redacted **")
    }
}

/// An AssumeRole that failed. Carries the role and STS's error code for the
/// log; never anything secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("AssumeRole {role_arn} (session {session_name}) failed: {code}: {message}")]
pub struct StsError {
    pub role_arn: String,
    pub session_name: String,
    pub code: String,
    pub message: String,
}

/// The one STS call the proxy makes.
#[async_trait]
pub trait AssumeRole: Send + Sync + 'static {
    async fn assume_role(
        &self,
        request: &RoleRequest,
        duration: Duration,
    ) -> Result<Credentials, StsError>;
}

/// The error code for an AssumeRole that got no answer from STS.
pub const NO_RESPONSE: &str = "NoResponse";

/// AssumeRole through aws-sdk-sts, with the proxy's own credentials and region
/// from aws-config's default chain (`AWS_ENDPOINT_URL_STS` and
/// `AWS_ENDPOINT_URL` are honoured there).
pub struct AwsSts {
    client: aws_sdk_sts::Client,
    /// The first failure of the proxy's own credential source. aws-config
    /// reports it once; later calls only say the error was "already taken",
    /// so it is repeated to keep naming the source that failed.
    source_failure: SourceFailure,
}

/// Remembers the first failure of the proxy's own credential source.
#[derive(Default)]
struct SourceFailure(std::sync::Mutex<Option<String>>);

impl SourceFailure {
    fn explain(&self, message: String) -> String {
        let mut first = self.0.lock().unwrap();
        if message.contains("already taken") {
            if let Some(first) = first.as_ref() {
                return format!(
                    "{message} (the proxy's credential source failed earlier: {first})"
                );
            }
        } else if message.contains("credentials") && first.is_none() {
            *first = Some(message.clone());
        }
        message
    }
}

/// STS's global endpoint lives in us-east-1; used when nothing names a region,
/// as on a laptop with no AWS config.
const FALLBACK_REGION: &str = "us-east-1";

impl AwsSts {
    /// Loads aws-config's defaults and builds the STS client, in `sts_region`
    /// when given. Returns the client and the region STS is called in.
    pub async fn from_env(sts_region: Option<&str>) -> (AwsSts, aws_config::SdkConfig, String) {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(
                aws_config::meta::region::RegionProviderChain::default_provider()
                    .or_else(aws_config::Region::new(FALLBACK_REGION)),
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(15))
                    .build(),
            )
            // Throttling and 5xx are retried with exponential backoff and jitter.
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4))
            .load()
            .await;
        let mut sts = aws_sdk_sts::config::Builder::from(&config);
        if let Some(region) = sts_region {
            sts = sts.region(aws_config::Region::new(region.to_string()));
        }
        let sts = sts.build();
        let region = sts
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| FALLBACK_REGION.to_string());
        (
            AwsSts {
                client: aws_sdk_sts::Client::from_conf(sts),
                source_failure: SourceFailure::default(),
            },
            config,
            region,
        )
    }
}

#[async_trait]
impl AssumeRole for AwsSts {
    async fn assume_role(
        &self,
        request: &RoleRequest,
        duration: Duration,
    ) -> Result<Credentials, StsError> {
        use aws_sdk_sts::error::ProvideErrorMetadata;
        let error = |code: &str, message: String| StsError {
            role_arn: request.role_arn.to_string(),
            session_name: request.session_name.to_string(),
            code: code.to_string(),
            message,
        };
        // A tag that cannot be built fails the call: never an untagged one.
        let tags = tags(request).map_err(|problem| error("BadTag", problem))?;
        let output = self
            .client
            .assume_role()
            .role_arn(request.role_arn.as_str())
            .role_session_name(&*request.session_name)
            .set_policy(request.policy.as_deref().map(str::to_string))
            .set_external_id(request.external_id.as_deref().map(str::to_string))
            .duration_seconds(duration.as_secs().try_into().unwrap_or(i32::MAX))
            .set_tags(tags)
            .set_transitive_tag_keys((!request.transitive_tag_keys.is_empty()).then(|| {
                request
                    .transitive_tag_keys
                    .iter()
                    .map(|key| key.to_string())
                    .collect()
            }))
            .set_source_identity(request.source_identity.as_deref().map(str::to_string))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(service) => error(
                    service.code().unwrap_or("Unknown"),
                    service.message().unwrap_or("no message").to_string(),
                ),
                None => error(
                    NO_RESPONSE,
                    self.source_failure.explain(
                        aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
                    ),
                ),
            })?;
        let issued = output
            .credentials
            .ok_or_else(|| error("NoCredentials", "STS answered without credentials".into()))?;
        let expiration = SystemTime::try_from(*issued.expiration())
            .map_err(|_| error("BadExpiration", "STS sent an unusable expiration".into()))?;
        Ok(Credentials {
            access_key_id: issued.access_key_id,
            secret_access_key: Secret::new(issued.secret_access_key),
            session_token: Secret::new(issued.session_token),
            expiration,
            last_updated: SystemTime::now(),
            rendered: Rendered::default(),
        })
    }
}
/// The request's session tags as aws-sdk-sts takes them; `None` when there
/// are none, so an untagged call is the call it always was.
fn tags(request: &RoleRequest) -> Result<Option<Vec<aws_sdk_sts::types::Tag>>, String> {
    if request.tags.is_empty() {
        return Ok(None);
    }
    request
        .tags
        .iter()
        .map(|(key, value)| {
            aws_sdk_sts::types::Tag::builder()
                .key(&**key)
                .value(&**value)
                .build()
                .map_err(|e| format!("session tag {key}: {e}"))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let creds = Credentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI"),
            session_token: Secret::new("FwoGZXIvYXdzE"),
            expiration: at(0),
            last_updated: at(0),
            rendered: Rendered::default(),
        };
        creds
            .rendered
            .legacy
            .set(bytes::Bytes::from_static(b"wJalrXUtnFEMI"))
            .unwrap();
        let shown = format!("{creds:?}");
        assert!(shown.contains("ASIAEXAMPLE"));
        assert!(
            !shown.contains("wJalrXUtnFEMI") && !shown.contains("FwoGZXIvYXdzE"),
            "{shown}"
        );
    }

    #[test]
    fn a_credential_source_failure_keeps_being_named() {
        let failure = SourceFailure::default();
        let first = "dispatch failure: failed to load credentials: profile `dev` was not defined";
        assert_eq!(failure.explain(first.into()), first);
        assert_eq!(
            failure.explain("dispatch failure: credentials error already taken".into()),
            format!("dispatch failure: credentials error already taken (the proxy's credential source failed earlier: {first})")
        );
    }
}
