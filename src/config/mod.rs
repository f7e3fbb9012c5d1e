//! The configuration file: its schema, defaults and validation.
//!
//! **Adding a key is one field, its check and its README row:** a field of
//! [`schema::RawConfig`] (serde names it, refuses it misspelt and checks
//! its JSON type), its check in `check.rs` (what a type cannot say), and a
//! row in README.md's configuration table (a test holds the table to the
//! schema). Its validated value goes into [`LiveConfig`] when a reload may
//! change it while serving, or into [`FixedConfig`] when it needs a
//! restart: the compiler asks which, and a reload then keeps the running
//! [`FixedConfig`] and names its changed keys by itself.
//!
//! Parsing happens in two steps, as ripgrep does with its flags: serde
//! reads the raw form ([`schema`]), then [`check`] builds the validated
//! [`Config`]. Only [`Config::load`] touches the file system; everything
//! else works on a `&str`, so tests need no files.

mod check;
mod schema;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use check::parse_listen;
pub use schema::known_keys;

use crate::ccreds::grants::Grant;
use crate::imds::local::{LocalMetadata, Overrides};
use crate::imds::{self, MetadataSource};
use crate::logging::LogFormat;
use crate::roles::{Role, RoleMap, SessionKey};
use crate::tagging::{HostFacts, Tagging};

/// Where the Go fork and Docker itself expect the engine.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// The Go fork's documented listen address.
pub const DEFAULT_LISTEN: &str = ":18000";
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ec2metaproxy";
/// STS's own default; also the cap for role chaining from instance-profile credentials.
pub const DEFAULT_SESSION_DURATION: Duration = Duration::from_secs(3600);

/// Metadata categories passed through to the real metadata service by default.
/// Everything that names the host (credentials, signed identity documents,
/// user-data, which often holds secrets) is left out on purpose.
pub const DEFAULT_PASSTHROUGH: &[&str] = &[
    "meta-data/ami-id",
    "meta-data/ami-launch-index",
    "meta-data/ami-manifest-path",
    "meta-data/block-device-mapping",
    "meta-data/events",
    "meta-data/hostname",
    "meta-data/instance-action",
    "meta-data/instance-id",
    "meta-data/instance-life-cycle",
    "meta-data/instance-type",
    "meta-data/local-hostname",
    "meta-data/local-ipv4",
    "meta-data/mac",
    "meta-data/network",
    "meta-data/placement",
    "meta-data/product-codes",
    "meta-data/public-hostname",
    "meta-data/public-ipv4",
    "meta-data/reservation-id",
    "meta-data/security-groups",
    "meta-data/services",
    "meta-data/spot",
    "meta-data/tags",
    "dynamic/instance-identity/document",
];

/// A validated configuration: what a reload may change, and what it may not.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages; `None` for an embedded config.
    pub source: Option<PathBuf>,
    pub live: LiveConfig,
    pub fixed: FixedConfig,
}

/// The settings a reload puts in force for the next request.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveConfig {
    pub aliases: crate::FastHashMap<String, Arc<Role>>,
    pub default_alias: String,
    pub default_policy: Option<Arc<str>>,
    /// Let `roleEnv` name roles outside the alias map.
    pub allow_unmapped: bool,
    /// Account alias -> account ID, for `name@account-alias`.
    pub account_map: std::collections::HashMap<String, String>,
    pub default_account: Option<String>,
    /// The IMDS door's own: `passthrough` and `requireToken`.
    pub imds: imds::Settings,
    /// `sessionTags`, `transitiveTagKeys`, `sourceIdentity`, `roleSessionName`.
    pub tagging: Arc<Tagging>,
}

/// The settings that take effect at start only; a reload keeps the running
/// ones. Serialised under the file's key names, so that a reload can name
/// the keys that changed (`changed_keys`) without a list of its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FixedConfig {
    /// Every address the metadata door listens on (IPv4 and IPv6 ones).
    pub listen: Vec<SocketAddr>,
    pub docker_host: String,
    /// `None` when the config says there is no metadata service (`"metadataURL": null`).
    #[serde(rename = "metadataURL", serialize_with = "as_text")]
    pub metadata_url: Option<http::Uri>,
    pub state_dir: PathBuf,
    pub session_duration: Duration,
    /// Health and metrics listener; off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub verbose: bool,
    /// The synthesised metadata tree's values (used when `metadataURL` is null).
    pub local_metadata: Overrides,
    /// Region of the STS endpoint; aws-config's resolution when `None`.
    pub sts_region: Option<String>,
    /// Static IP -> alias mappings, watched and reloaded on their own.
    pub role_mapping_file: Option<PathBuf>,
    /// Refuse credentials to containers whose connections cannot be proven
    /// to be their own (see docs/security.md); off, serve them by address.
    pub require_caller_proof: bool,
    /// Container environment variable that names an alias (or role) when no
    /// label does; which variables are kept is decided when Docker is listed.
    pub role_env: Option<String>,
    pub role_session_key: Option<SessionKey>,
    /// The container credentials door (by token); off when `None`.
    pub container_credentials: Option<ContainerCredentials>,
}

/// `containerCredentials`: where the by-token door listens, and its grants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerCredentials {
    pub listen: Vec<SocketAddr>,
    /// Grant name -> alias.
    pub grants: std::collections::BTreeMap<String, String>,
    /// Where 169.254.170.2:80 is DNATed to: the door by caller address.
    pub address_listen: Vec<SocketAddr>,
}

impl ContainerCredentials {
    /// The door's grants.
    pub fn grants(&self) -> Vec<Grant> {
        self.grants
            .iter()
            .map(|(name, alias)| Grant {
                name: name.clone(),
                alias: alias.clone(),
            })
            .collect()
    }
}

impl FixedConfig {
    /// Where the grants' token files are: `stateDir/grants`.
    pub fn grants_dir(&self) -> PathBuf {
        self.state_dir.join("grants")
    }
}

fn as_text<S: serde::Serializer>(uri: &Option<http::Uri>, s: S) -> Result<S::Ok, S::Error> {
    match uri {
        Some(uri) => s.collect_str(uri),
        None => s.serialize_none(),
    }
}

impl FixedConfig {
    /// The keys whose values differ between `self` and `next`, in this
    /// struct's order.
    pub fn changed_keys(&self, next: &FixedConfig) -> Vec<&'static str> {
        if self == next {
            return Vec::new();
        }
        let (Ok(Value::Object(before)), Ok(Value::Object(after))) =
            (serde_json::to_value(self), serde_json::to_value(next))
        else {
            return Vec::new();
        };
        before
            .iter()
            .filter(|(key, value)| after.get(key.as_str()) != Some(value))
            .filter_map(|(key, _)| known_keys().iter().copied().find(|known| known == key))
            .collect()
    }
}

impl Config {
    /// The alias map the broker reads: the live aliases with the fixed
    /// environment settings.
    pub fn roles(&self) -> RoleMap {
        let live = &self.live;
        RoleMap {
            aliases: live.aliases.clone(),
            default_alias: live.default_alias.clone(),
            default_policy: live.default_policy.clone(),
            role_env: self.fixed.role_env.clone(),
            allow_unmapped: live.allow_unmapped,
            account_map: live.account_map.clone(),
            default_account: live.default_account.clone(),
            session_key: self.fixed.role_session_key.clone(),
            tagging: live.tagging.clone(),
            // Without a metadata service, localMetadata's instance ID is
            // the one the containers see; the upstream one is not fetched.
            host: Arc::new(HostFacts::local(
                self.fixed
                    .metadata_url
                    .is_none()
                    .then_some(self.fixed.local_metadata.instance_id.as_deref())
                    .flatten(),
            )),
        }
    }

    /// Whether a tagging template names `{instanceId}`, globally or in an alias.
    pub fn names_instance_id(&self) -> bool {
        self.live.tagging.names_instance_id()
            || self.live.aliases.values().any(|role| {
                role.tagging
                    .as_ref()
                    .is_some_and(|tagging| tagging.names_instance_id())
            })
    }

    /// What the IMDS door reads per request; reload swaps in a new one.
    pub fn imds_settings(&self) -> imds::Settings {
        self.live.imds.clone()
    }

    /// This config's live part in force with `running`'s fixed part: what
    /// a reload stores.
    pub fn with_fixed(self, running: &Config) -> Config {
        Config {
            fixed: running.fixed.clone(),
            ..self
        }
    }

    /// The synthesised metadata tree: defaults (the given region, the default
    /// role's account) with the config's `localMetadata` applied.
    pub fn local_metadata(&self, region: &str) -> LocalMetadata {
        let account = self
            .live
            .aliases
            .get(&self.live.default_alias)
            .map_or("123456789012", |role| role.arn.account());
        LocalMetadata::new(region, account, &self.fixed.local_metadata)
    }

    /// Where the IMDS door's metadata comes from: the metadata service, or
    /// the synthesised tree in `region` when there is none. Built once, at
    /// start-up (`metadataURL` and `localMetadata` need a restart).
    pub fn metadata_source(&self, region: &str) -> MetadataSource {
        match &self.fixed.metadata_url {
            Some(url) => MetadataSource::Upstream(url.clone()),
            None => MetadataSource::Local(self.local_metadata(region)),
        }
    }
}

/// What went wrong with a config file. Each variant names the file; the
/// validation errors also name the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}, column {column}: invalid JSON: {message}")]
    Json {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: key \"{key}\": {problem}")]
    Invalid {
        path: String,
        key: String,
        problem: String,
    },
}

impl ConfigError {
    /// A hint for the operator where the fix is obvious, printed on its own line.
    pub fn hint(&self) -> Option<String> {
        match self {
            // A nested object's unknown key lists its object's keys itself.
            ConfigError::Invalid { key, problem, .. }
                if problem.starts_with("unknown key") && !problem.contains("(known:") =>
            {
                Some(format!(
                    "known keys: {} (\"{key}\" is refused because a typo would otherwise be silently ignored)",
                    known_keys().join(", ")
                ))
            }
            ConfigError::Read { .. } => {
                Some("pass the config file with -c FILE; see config.example.json".into())
            }
            _ => None,
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Validates a config held in memory; `name` stands for the file in messages.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        let json = |line, column, message| ConfigError::Json {
            path: name.to_string(),
            line,
            column,
            message,
        };
        // The JSON first, for its line and column, then the schema on the
        // parsed document (which the messages quote what was found from).
        let document: Value = serde_json::from_str(text)
            .map_err(|e| json(e.line(), e.column(), strip_position(&e.to_string())))?;
        if !document.is_object() {
            return Err(json(
                1,
                1,
                "the config must be a JSON object ({ ... })".into(),
            ));
        }
        let invalid = |key: String, problem: String| ConfigError::Invalid {
            path: name.to_string(),
            key,
            problem,
        };
        let raw: schema::RawConfig = serde_path_to_error::deserialize(&document).map_err(|e| {
            let (key, problem) = schema::serde_problem(&e, &document);
            invalid(key, problem)
        })?;
        Config::try_from(raw).map_err(|e| invalid(e.key, e.problem))
    }
}

/// serde_json appends " at line L column C"; we print the position ourselves.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "aliasToARN": {"default": "arn:aws:iam::123456789012:role/Default"},
        "defaultAlias": "default"
    }"#;

    fn error_of(text: &str) -> String {
        Config::parse(text, "test.json").unwrap_err().to_string()
    }

    #[test]
    fn container_credentials_name_listeners_and_grants_of_known_aliases() {
        let with = |cc: &str| {
            format!(
                r#"{{"aliasToARN": {{"default": "arn:aws:iam::123456789012:role/Default"}},
                    "defaultAlias": "default", "containerCredentials": {cc}}}"#
            )
        };
        let config = Config::parse(
            &with(r#"{"listen": ["127.0.0.1:18001", "[::1]:18001"], "grants": {"batch-1": {"alias": "default"}}}"#),
            "test.json",
        )
        .unwrap();
        let cc = config.fixed.container_credentials.as_ref().unwrap();
        assert_eq!(cc.listen.len(), 2);
        assert_eq!(cc.grants()[0].name, "batch-1");
        assert!(cc.address_listen.is_empty());
        let by_address =
            Config::parse(&with(r#"{"addressListen": ["172.17.0.1:18002"]}"#), "t").unwrap();
        let cc = by_address.fixed.container_credentials.unwrap();
        assert!(cc.listen.is_empty() && cc.grants.is_empty());
        assert_eq!(cc.address_listen, ["172.17.0.1:18002".parse().unwrap()]);
        assert_eq!(
            config.fixed.grants_dir(),
            Path::new(DEFAULT_STATE_DIR).join("grants")
        );
        assert!(Config::parse(MINIMAL, "t")
            .unwrap()
            .fixed
            .container_credentials
            .is_none());
        for (cc, expected) in [
            (
                r#"{"listen": [], "grants": {}}"#,
                r#"test.json: key "containerCredentials.listen": needs at least one IP:PORT, such as "127.0.0.1:18001" (or addressListen, for callers by address)"#,
            ),
            (
                r#"{"listen": ["127.0.0.1:1"], "grants": {"w": {"alias": "default"}}}"#,
                r#"test.json: key "containerCredentials.grants.w": a grant name is 2 to 64 letters, digits, '-' or '_' (it names the token file and the STS session)"#,
            ),
            (
                r#"{"listen": ["127.0.0.1:1"], "grants": {"../x": {"alias": "default"}}}"#,
                r#"test.json: key "containerCredentials.grants.../x": a grant name is 2 to 64 letters, digits, '-' or '_' (it names the token file and the STS session)"#,
            ),
            (
                r#"{"listen": ["127.0.0.1:1"], "grants": {"web": {"alias": "nope"}}}"#,
                r#"test.json: key "containerCredentials.grants.web.alias": "nope" is not an alias in "aliasToARN""#,
            ),
        ] {
            assert_eq!(error_of(&with(cc)), expected, "{cc}");
        }
        assert!(error_of(&with(
            r#"{"listen": ["127.0.0.1:1"], "grants": {"web": {"alias": "default", "token": "x"}}}"#
        ))
        .contains("containerCredentials.grants.web.token"));
    }

    #[test]
    fn minimal_config_takes_the_documented_defaults() {
        let config = Config::parse(MINIMAL, "test.json").unwrap();
        let fixed = &config.fixed;
        assert_eq!(fixed.docker_host, DEFAULT_DOCKER_HOST);
        assert_eq!(fixed.listen, ["0.0.0.0:18000".parse().unwrap()]);
        assert_eq!(
            fixed.metadata_url.as_ref().unwrap().to_string(),
            "http://169.254.169.254/"
        );
        assert_eq!(fixed.session_duration, Duration::from_secs(3600));
        assert!(!fixed.verbose && !config.live.imds.require_token);
        assert!(fixed.require_caller_proof);
        assert!(config.live.default_policy.is_none());
        assert_eq!(config.roles().get("default").unwrap().arn.name(), "Default");
    }

    #[test]
    fn a_go_fork_config_loads_unchanged() {
        let text = r#"{
          "defaultAlias": "default",
          "aliasToARN": {
            "default": "arn:aws:iam::000000000000:role/ProxyDefault",
            "db": "arn:aws:iam::000000000000:role/MysqlSlave"
          },
          "defaultPolicy": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"s3:*\",\"Resource\":\"*\"}]}",
          "dockerHost": "unix:///var/run/custom-docker.sock",
          "listen": ":18000",
          "verbose": true
        }"#;
        let config = Config::parse(text, "go.json").unwrap();
        assert_eq!(config.live.aliases.len(), 2);
        assert!(config.fixed.verbose);
        assert_eq!(
            config.fixed.docker_host,
            "unix:///var/run/custom-docker.sock"
        );
        assert!(config.live.default_policy.unwrap().contains("s3:*"));
    }

    #[test]
    fn an_alias_may_be_an_object_with_external_id_policy_and_duration() {
        let text = r#"{"aliasToARN": {
            "plain": "arn:aws:iam::123456789012:role/Plain",
            "partner": {"arn": "arn:aws:iam::210987654321:role/Partner", "externalId": "xyz-123",
                        "policy": {"Version": "2012-10-17"}, "durationSeconds": 1800}},
            "defaultAlias": "plain"}"#;
        let config = Config::parse(text, "t").unwrap();
        let roles = config.roles();
        let partner = roles.get("partner").unwrap();
        assert_eq!(partner.arn.name(), "Partner");
        assert_eq!(partner.external_id.as_deref(), Some("xyz-123"));
        assert_eq!(
            partner.policy.as_deref(),
            Some(r#"{"Version":"2012-10-17"}"#)
        );
        assert_eq!(partner.duration, Some(Duration::from_secs(1800)));
        assert!(roles.get("plain").unwrap().external_id.is_none());
    }

    #[test]
    fn migration_keys_are_validated() {
        let base =
            r#""aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a""#;
        let ok = Config::parse(
            &format!(
                r#"{{{base}, "roleEnv": "IAM_ROLE", "allowUnmappedRoles": true,
                "accountMap": {{"prod": "111111111111"}}, "defaultAccountId": "222222222222",
                "roleSessionKey": "Labels:com.example.session", "stsRegion": "eu-west-1"}}"#
            ),
            "t",
        )
        .unwrap();
        assert_eq!(ok.roles().role_env.as_deref(), Some("IAM_ROLE"));
        assert_eq!(
            ok.roles().session_key,
            Some(SessionKey::Label("com.example.session".into()))
        );
        assert_eq!(ok.fixed.sts_region.as_deref(), Some("eu-west-1"));
        let by_address = Config::parse(&format!(r#"{{{base}, "requireCallerProof": false}}"#), "t");
        assert!(!by_address.unwrap().fixed.require_caller_proof);
        for (extra, expected) in [
            (r#""allowUnmappedRoles": true"#, "t: key \"allowUnmappedRoles\": only applies to roles named by \"roleEnv\"; set roleEnv too"),
            (r#""accountMap": {"prod": "12"}"#, "t: key \"accountMap.prod\": expected a 12-digit account ID, found \"12\""),
            (r#""roleSessionKey": "Name""#, "t: key \"roleSessionKey\": \"Name\" is not \"Labels:NAME\" or \"Env:NAME\""),
            (r#""defaultAccountId": "abc""#, "t: key \"defaultAccountId\": \"abc\" is not a 12-digit account ID"),
        ] {
            let error = Config::parse(&format!("{{{base}, {extra}}}"), "t").unwrap_err();
            assert_eq!(error.to_string(), expected);
        }
        let bad_object = Config::parse(
            r#"{"aliasToARN": {"a": {"arn": "arn:aws:iam::123456789012:role/A", "externalID": "x"}}, "defaultAlias": "a"}"#,
            "t",
        )
        .unwrap_err();
        assert_eq!(
            bad_object.to_string(),
            "t: key \"aliasToARN.a.externalID\": unknown key (known: arn, externalId, policy, durationSeconds, sessionTags, transitiveTagKeys, sourceIdentity, roleSessionName)"
        );
    }

    #[test]
    fn metadata_url_null_means_no_upstream() {
        let text = r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"},
                       "defaultAlias": "a", "metadataURL": null}"#;
        assert!(Config::parse(text, "t")
            .unwrap()
            .fixed
            .metadata_url
            .is_none());
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_problem() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "bad JSON reports line and column",
                "{\n  \"aliasToARN\": {,\n}",
                "test.json: line 2, column 18: invalid JSON: key must be a string",
            ),
            (
                "a typo in a key is refused, with a suggestion",
                r#"{"aliasToArn": {}, "defaultAlias": "a"}"#,
                "test.json: key \"aliasToArn\": unknown key (did you mean \"aliasToARN\"?)",
            ),
            (
                "an empty alias map",
                r#"{"aliasToARN": {}, "defaultAlias": "a"}"#,
                "test.json: key \"aliasToARN\": is empty: map at least one alias to a role ARN",
            ),
            (
                "the default alias must be in the map",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "b"}"#,
                "test.json: key \"defaultAlias\": \"b\" is not an alias in \"aliasToARN\" (aliases: a)",
            ),
            (
                "an ARN that is not an IAM role",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:user/bob"}, "defaultAlias": "a"}"#,
                "test.json: key \"aliasToARN.a\": \"arn:aws:iam::123456789012:user/bob\" is not an IAM role ARN (expected arn:aws:iam::ACCOUNT:role/NAME)",
            ),
            (
                "an unparsable listen address",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "listen": "localhost"}"#,
                "test.json: key \"listen\": \"localhost\" is not a listen address such as \"127.0.0.1:18000\" or \":18000\"",
            ),
            (
                "an empty listen list",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "listen": []}"#,
                "test.json: key \"listen\": the list is empty: give at least one address",
            ),
            (
                "a listen address listed twice",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "listen": [":80", "0.0.0.0:80"]}"#,
                "test.json: key \"listen\": \"0.0.0.0:80\" is listed twice",
            ),
            (
                "a listen list with a bad address",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "listen": ["[fd00::1]:80", "fd00::2"]}"#,
                "test.json: key \"listen\": \"fd00::2\" is not a listen address such as \"127.0.0.1:18000\" or \":18000\"",
            ),
            (
                "listen is neither an address nor a list",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "listen": 80}"#,
                "test.json: key \"listen\": expected a listen address such as \":18000\", or a list of them",
            ),
            (
                "a policy that is not a JSON object",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "defaultPolicy": "[1]"}"#,
                "test.json: key \"defaultPolicy\": the policy must be a JSON object, found a list",
            ),
            (
                "a session duration outside STS's limits",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "sessionDuration": 60}"#,
                "test.json: key \"sessionDuration\": expected whole seconds from 900 to 43200 (STS's limits), found 60",
            ),
            (
                "a metadata URL with a path",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "metadataURL": "http://169.254.169.254/latest"}"#,
                "test.json: key \"metadataURL\": \"http://169.254.169.254/latest\" must not have a path or query",
            ),
            (
                "a passthrough prefix that covers the host's credentials",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "passthrough": ["meta-data"]}"#,
                "test.json: key \"passthrough\": \"meta-data\" would pass the host's identity or credentials through; list narrower categories",
            ),
            (
                "an unknown log format",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "logFormat": "xml"}"#,
                "test.json: key \"logFormat\": \"xml\" is not \"text\" or \"json\"",
            ),
            (
                "a missing default alias",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}}"#,
                "test.json: key \"defaultAlias\": is required",
            ),
            (
                "a Docker host with an unknown scheme",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "dockerHost": "/var/run/docker.sock"}"#,
                "test.json: key \"dockerHost\": \"/var/run/docker.sock\" must start with unix://, tcp:// or http://",
            ),
            (
                "a value of the wrong type",
                r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "verbose": "yes"}"#,
                "test.json: key \"verbose\": expected true or false, found a string",
            ),
        ];
        for (description, text, expected) in cases {
            assert_eq!(&error_of(text), expected, "case: {description}");
        }
    }

    #[test]
    fn settings_that_cannot_change_live_are_named() {
        let before = Config::parse(MINIMAL, "t").unwrap();
        let after = Config::parse(
            r#"{"aliasToARN": {"default": "arn:aws:iam::123456789012:role/Other"},
                "defaultAlias": "default", "listen": ":9999", "logFormat": "json"}"#,
            "t",
        )
        .unwrap();
        assert_eq!(
            before.fixed.changed_keys(&after.fixed),
            vec!["listen", "logFormat"]
        );
        let env_roles = Config::parse(
            r#"{"aliasToARN": {"default": "arn:aws:iam::123456789012:role/Default"},
                "defaultAlias": "default", "roleEnv": "IAM_ROLE", "stsRegion": "eu-west-1"}"#,
            "t",
        )
        .unwrap();
        assert_eq!(
            before.fixed.changed_keys(&env_roles.fixed),
            vec!["stsRegion", "roleEnv"]
        );
        assert!(before.fixed.changed_keys(&before.fixed.clone()).is_empty());
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let error = Config::load(Path::new("/nonexistent/ec2metaproxy.json")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read config file /nonexistent/ec2metaproxy.json: "),
            "{error}"
        );
        assert!(error.hint().is_some());
    }

    /// The Go fork's single string still loads; a list adds an IPv6 door.
    #[test]
    fn listen_takes_one_address_or_a_list() {
        let one = Config::parse(
            r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "listen": "172.17.0.1:18000"}"#,
            "test.json",
        )
        .unwrap();
        assert_eq!(one.fixed.listen, ["172.17.0.1:18000".parse().unwrap()]);
        let both = Config::parse(
            r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a", "listen": ["172.17.0.1:18000", "[fd00:d0c::1]:18000"]}"#,
            "test.json",
        )
        .unwrap();
        assert_eq!(
            both.fixed.listen,
            [
                "172.17.0.1:18000".parse().unwrap(),
                "[fd00:d0c::1]:18000".parse().unwrap()
            ]
        );
    }

    #[test]
    fn listen_accepts_go_style_and_ipv6() {
        assert_eq!(parse_listen(":80").unwrap(), "0.0.0.0:80".parse().unwrap());
        assert_eq!(
            parse_listen("[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(parse_listen("1.2.3.4").is_err());
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let text = include_str!("../../config.example.json");
        Config::parse(text, "config.example.json").unwrap();
    }

    /// serde's own refusals (wrong types, unknown or missing keys in nested
    /// objects) say what the checks say: the key's path, what was expected,
    /// what was found.
    #[test]
    fn schema_errors_name_the_keys_path() {
        let base =
            r#""aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a""#;
        let cases: &[(&str, &str, &str)] = &[
            (
                "an alias that is neither an ARN nor an object",
                r#"{"aliasToARN": {"a": 5}, "defaultAlias": "a"}"#,
                "t: key \"aliasToARN.a\": expected a role ARN string or an object with \"arn\", found a number",
            ),
            (
                "an alias object without its ARN",
                r#"{"aliasToARN": {"a": {"externalId": "xyz-123"}}, "defaultAlias": "a"}"#,
                "t: key \"aliasToARN.a.arn\": is required",
            ),
            (
                "a negative duration names the value",
                r#"{"aliasToARN": {"a": {"arn": "arn:aws:iam::123456789012:role/A", "durationSeconds": -5}}, "defaultAlias": "a"}"#,
                "t: key \"aliasToARN.a.durationSeconds\": expected a whole number, found -5",
            ),
            (
                "an alias object's duration outside STS's limits",
                r#"{"aliasToARN": {"a": {"arn": "arn:aws:iam::123456789012:role/A", "durationSeconds": 60}}, "defaultAlias": "a"}"#,
                "t: key \"aliasToARN.a.durationSeconds\": expected whole seconds from 900 to 43200 (STS's limits), found 60",
            ),
            (
                "the alias map as a list",
                r#"{"aliasToARN": ["a"], "defaultAlias": "a"}"#,
                "t: key \"aliasToARN\": expected an object, found a list",
            ),
            (
                "a passthrough entry that is not a string",
                &format!(r#"{{{base}, "passthrough": ["meta-data/ami-id", 3]}}"#),
                "t: key \"passthrough[1]\": expected a string, found a number",
            ),
            (
                "a session duration as text",
                &format!(r#"{{{base}, "sessionDuration": "1h"}}"#),
                "t: key \"sessionDuration\": expected a whole number, found a string",
            ),
            (
                "an unknown localMetadata key",
                &format!(r#"{{{base}, "localMetadata": {{"regoin": "eu-west-1"}}}}"#),
                "t: key \"localMetadata.regoin\": unknown key (known: region, availabilityZone, instanceId, instanceType, amiId, localIpv4, hostname, accountId)",
            ),
            (
                "localMetadata as a list (serde's derive would read it field by field)",
                &format!(r#"{{{base}, "localMetadata": ["eu-west-1"]}}"#),
                "t: key \"localMetadata\": expected an object, found a list",
            ),
            (
                "a localMetadata value that is not a string",
                &format!(r#"{{{base}, "localMetadata": {{"region": 1}}}}"#),
                "t: key \"localMetadata.region\": expected a string, found a number",
            ),
            (
                "a config that is not an object",
                "[1]",
                "t: line 1, column 1: invalid JSON: the config must be a JSON object ({ ... })",
            ),
        ];
        for (description, text, expected) in cases {
            let error = Config::parse(text, "t").unwrap_err();
            assert_eq!(&error.to_string(), expected, "case: {description}");
            assert!(error.hint().is_none(), "case: {description}");
        }
    }

    #[test]
    fn an_unknown_key_is_answered_with_the_schemas_keys() {
        let error = Config::parse(r#"{"aliasToArn": {}, "defaultAlias": "a"}"#, "t").unwrap_err();
        let hint = error.hint().unwrap();
        assert!(
            hint.starts_with("known keys: aliasToARN, defaultAlias, defaultPolicy, dockerHost, listen, verbose, metadataURL,"),
            "{hint}"
        );
        assert!(hint.ends_with(
            "(\"aliasToArn\" is refused because a typo would otherwise be silently ignored)"
        ));
        assert_eq!(known_keys().len(), 27);
    }

    #[test]
    fn tagging_is_off_by_default_and_an_alias_overrides_it_key_by_key() {
        let base =
            r#""aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a""#;
        let off = Config::parse(&format!("{{{base}}}"), "t").unwrap();
        assert_eq!(*off.live.tagging, Tagging::default());
        let on = Config::parse(
            r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A",
                               "b": {"arn": "arn:aws:iam::123456789012:role/B",
                                     "roleSessionName": "b-{shortId}"}},
                "defaultAlias": "a",
                "sessionTags": {"service": "{composeService}", "team": "payments"},
                "transitiveTagKeys": ["team"], "sourceIdentity": "{name}"}"#,
            "t",
        )
        .unwrap();
        let global = &on.live.tagging;
        assert_eq!(global.tags.as_ref().unwrap().len(), 2);
        assert!(on.live.aliases["a"].tagging.is_none());
        let b = on.live.aliases["b"].tagging.as_deref().unwrap();
        assert_eq!(b.tags, global.tags);
        assert_eq!(b.source_identity, global.source_identity);
        assert!(b.session_name.is_some() && global.session_name.is_none());
        assert!(!on.names_instance_id() && !off.names_instance_id());
        let in_alias = Config::parse(
            r#"{"aliasToARN": {"a": {"arn": "arn:aws:iam::123456789012:role/A",
                                     "sessionTags": {"host": "on {instanceId}"}}},
                "defaultAlias": "a"}"#,
            "t",
        )
        .unwrap();
        assert!(
            in_alias.names_instance_id(),
            "only then is the metadata service asked"
        );
    }

    #[test]
    fn tagging_keys_that_can_never_fit_sts_are_refused() {
        let base =
            r#""aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a""#;
        let long = "x".repeat(65);
        for (extra, expected) in [
            (
                format!(r#""roleSessionName": "{long}-{{name}}""#),
                format!("t: key \"roleSessionName\": \"{long}-{{name}}\": its fixed text alone is 66 characters, over STS's 64"),
            ),
            (
                r#""sourceIdentity": "team a""#.to_string(),
                "t: key \"sourceIdentity\": \"team a\": ' ' is not allowed here by STS".to_string(),
            ),
            (
                r#""roleSessionName": "{podName}""#.to_string(),
                "t: key \"roleSessionName\": \"{podName}\": {podName} is not a source (known: {name}, {shortId}, {image}, {composeProject}, {composeService}, {swarmService}, {instanceId}, {hostname}, {alias})".to_string(),
            ),
            (
                r#""sessionTags": {"aws:x": "y"}"#.to_string(),
                "t: key \"sessionTags.aws:x\": tag key \"aws:x\": the aws: prefix is AWS's own".to_string(),
            ),
            (
                r#""sessionTags": {"k": "a,b"}"#.to_string(),
                "t: key \"sessionTags.k\": \"a,b\": ',' is not allowed here by STS".to_string(),
            ),
            (
                r#""sessionTags": {"k": "v"}, "transitiveTagKeys": ["other"]"#.to_string(),
                "t: key \"transitiveTagKeys\": \"other\" is not a key of sessionTags".to_string(),
            ),
            (
                format!(
                    r#""sessionTags": {{{}}}"#,
                    (0..51).map(|i| format!(r#""k{i}": "v""#)).collect::<Vec<_>>().join(",")
                ),
                "t: key \"sessionTags\": 51 tags, over STS's 50".to_string(),
            ),
        ] {
            let error = Config::parse(&format!("{{{base}, {extra}}}"), "t").unwrap_err();
            assert_eq!(error.to_string(), expected);
        }
        let in_alias = Config::parse(
            r#"{"aliasToARN": {"a": {"arn": "arn:aws:iam::123456789012:role/A", "sourceIdentity": "x"}},
                "defaultAlias": "a"}"#,
            "t",
        )
        .unwrap_err();
        assert_eq!(
            in_alias.to_string(),
            "t: key \"aliasToARN.a.sourceIdentity\": \"x\" is shorter than STS's 2 characters"
        );
    }

    #[test]
    fn null_means_the_default_except_for_metadata_url() {
        let config = Config::parse(
            r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"}, "defaultAlias": "a",
                "listen": null, "verbose": null, "passthrough": null, "localMetadata": null,
                "defaultPolicy": null, "sessionDuration": null}"#,
            "t",
        )
        .unwrap();
        assert_eq!(config.fixed.listen, ["0.0.0.0:18000".parse().unwrap()]);
        assert_eq!(
            config.live.imds.passthrough.len(),
            DEFAULT_PASSTHROUGH.len()
        );
        assert!(config.fixed.metadata_url.is_some());
    }

    #[test]
    fn local_metadata_is_validated_once_into_the_doors_values() {
        let config = Config::parse(
            r#"{"aliasToARN": {"a": "arn:aws:iam::210987654321:role/A"}, "defaultAlias": "a",
                "metadataURL": null, "localMetadata": {"region": "eu-west-1", "instanceId": "i-dev"}}"#,
            "t",
        )
        .unwrap();
        let local = config.local_metadata("us-east-1");
        assert_eq!(local.region, "eu-west-1");
        assert_eq!(local.availability_zone, "eu-west-1a");
        assert_eq!(local.instance_id, "i-dev");
        assert_eq!(
            local.account_id, "210987654321",
            "the default role's account"
        );
    }

    /// A reload names a changed restart-only key by its serde form: every
    /// name that form uses must be a key of the file.
    #[test]
    fn the_fixed_parts_serde_names_are_the_files_keys() {
        let config = Config::parse(MINIMAL, "t").unwrap();
        let Value::Object(fixed) = serde_json::to_value(&config.fixed).unwrap() else {
            panic!("not an object")
        };
        for key in fixed.keys() {
            assert!(
                known_keys().contains(&key.as_str()),
                "{key} is not a key of the file"
            );
        }
        let mut changed = config.fixed.clone();
        changed.local_metadata.region = Some("eu-west-1".into());
        changed.metadata_url = None;
        changed.session_duration = Duration::from_secs(900);
        assert_eq!(
            config.fixed.changed_keys(&changed),
            vec!["metadataURL", "sessionDuration", "localMetadata"]
        );
    }

    /// README.md's configuration table lists every key of the schema
    /// exactly once, and no other; the keys of the nested objects (an
    /// alias object, `localMetadata`) are named in it too.
    #[test]
    fn the_readme_table_lists_every_key_once() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## ")
            .find(|part| part.starts_with("Configuration\n"))
            .expect("README.md has a Configuration section");
        let rows: Vec<&str> = section
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|row| row.split('`').next())
            .collect();
        for key in known_keys() {
            let count = rows.iter().filter(|row| *row == key).count();
            assert_eq!(
                count, 1,
                "README.md's configuration table lists `{key}` {count} times"
            );
        }
        for row in &rows {
            assert!(
                known_keys().contains(row),
                "README.md's configuration table lists `{row}`, which is no key of the schema"
            );
        }
        let nested = schema::field_names::<schema::RawRole>()
            .iter()
            .chain(schema::field_names::<Overrides>());
        for name in nested {
            assert!(
                section.contains(&format!("`{name}`")) || section.contains(&format!("\"{name}\"")),
                "README.md's Configuration section does not name `{name}`"
            );
        }
    }
}
