//! The configuration file: its JSON schema, defaults and validation.
//!
//! Parsing happens in two steps, as ripgrep does with its flags: the raw JSON
//! is checked key by key (so a typo is named, not silently ignored), then a
//! validated [`Config`] is built. Only [`Config::load`] touches the file
//! system; everything else works on a `&str`, so tests need no files.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::container::{json_kind, normalize_policy};
use crate::imds::local::LocalMetadata;
use crate::imds::{self, MetadataSource};
use crate::logging::LogFormat;
use crate::roles::{is_account_id, Role, RoleArn, RoleMap, SessionKey};

/// Where the Go fork and Docker itself expect the engine.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// The Go fork's documented listen address.
pub const DEFAULT_LISTEN: &str = ":18000";
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ec2metaproxy";
/// STS's own default; also the cap for role chaining from instance-profile credentials.
pub const DEFAULT_SESSION_DURATION: Duration = Duration::from_secs(3600);
/// STS refuses AssumeRole durations outside 15 minutes ..= 12 hours.
const MIN_SESSION_SECS: u64 = 900;
const MAX_SESSION_SECS: u64 = 43_200;

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

/// Every key the file may hold. The first six are the Go fork's.
const KNOWN_KEYS: &[&str] = &[
    "aliasToARN",
    "defaultAlias",
    "defaultPolicy",
    "dockerHost",
    "listen",
    "verbose",
    "metadataURL",
    "stateDir",
    "sessionDuration",
    "requireToken",
    "passthrough",
    "metricsListen",
    "logFormat",
    "localMetadata",
    "roleEnv",
    "allowUnmappedRoles",
    "accountMap",
    "defaultAccountId",
    "roleSessionKey",
    "stsRegion",
    "roleMappingFile",
    "requireCallerProof",
];

/// A validated configuration. Cheap to share: handlers read it through an `Arc`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages; `None` for an embedded config.
    pub source: Option<PathBuf>,
    pub roles: RoleMap,
    pub docker_host: String,
    pub listen: SocketAddr,
    pub verbose: bool,
    /// `None` when the config says there is no metadata service (`"metadataURL": null`).
    pub metadata_url: Option<http::Uri>,
    pub state_dir: PathBuf,
    pub session_duration: Duration,
    pub require_token: bool,
    /// Refuse credentials to containers whose connections cannot be proven
    /// to be their own (see docs/security.md); off, serve them by address.
    pub require_caller_proof: bool,
    /// Metadata path prefixes (after the API version) that may reach the upstream.
    pub passthrough: Vec<String>,
    /// Health and metrics listener; off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// Overrides for the synthesised metadata tree (used when `metadataURL` is null).
    pub local_metadata_overrides: Map<String, Value>,
    /// Region of the STS endpoint; aws-config's resolution when `None`.
    pub sts_region: Option<String>,
    /// Static IP -> alias mappings, watched and reloaded.
    pub role_mapping_file: Option<PathBuf>,
}

/// Reads one setting of a config as text, for comparing two configs.
pub type ReadSetting = fn(&Config) -> String;

/// Keys whose new value only takes effect after a restart, with a reader
/// for comparing two configs. Everything else applies to the next request.
pub const RESTART_KEYS: &[(&str, ReadSetting)] = &[
    ("listen", |c| c.listen.to_string()),
    ("dockerHost", |c| c.docker_host.clone()),
    ("metadataURL", |c| format!("{:?}", c.metadata_url)),
    ("stateDir", |c| c.state_dir.display().to_string()),
    ("sessionDuration", |c| {
        c.session_duration.as_secs().to_string()
    }),
    ("metricsListen", |c| format!("{:?}", c.metrics_listen)),
    ("logFormat", |c| format!("{:?}", c.log_format)),
    ("verbose", |c| c.verbose.to_string()),
    ("localMetadata", |c| {
        format!("{:?}", c.local_metadata_overrides)
    }),
    ("stsRegion", |c| format!("{:?}", c.sts_region)),
    ("roleMappingFile", |c| format!("{:?}", c.role_mapping_file)),
    ("requireCallerProof", |c| c.require_caller_proof.to_string()),
    // Which environment variables are kept is decided when Docker is listed.
    ("roleEnv", |c| format!("{:?}", c.roles.role_env)),
    ("roleSessionKey", |c| format!("{:?}", c.roles.session_key)),
];

impl Config {
    /// The synthesised metadata tree: defaults (the given region, the default
    /// role's account) with the config's `localMetadata` applied.
    pub fn local_metadata(&self, region: &str) -> LocalMetadata {
        let account = self
            .roles
            .get(&self.roles.default_alias)
            .map_or("123456789012", |role| role.arn.account());
        let mut local = LocalMetadata::with_defaults(region, account);
        local
            .apply(&self.local_metadata_overrides)
            .expect("validated when the config was parsed");
        local
    }

    /// Where the IMDS door's metadata comes from: the metadata service, or
    /// the synthesised tree in `region` when there is none. Built once, at
    /// start-up (`metadataURL` and `localMetadata` need a restart).
    pub fn metadata_source(&self, region: &str) -> MetadataSource {
        match &self.metadata_url {
            Some(url) => MetadataSource::Upstream(url.clone()),
            None => MetadataSource::Local(self.local_metadata(region)),
        }
    }

    /// What the IMDS door reads per request; reload swaps in a new one.
    pub fn imds_settings(&self) -> imds::Settings {
        imds::Settings {
            passthrough: self.passthrough.clone(),
            require_token: self.require_token,
        }
    }

    /// The keys of `RESTART_KEYS` whose values differ between `self` and `next`.
    pub fn needs_restart(&self, next: &Config) -> Vec<&'static str> {
        RESTART_KEYS
            .iter()
            .filter(|(_, read)| read(self) != read(next))
            .map(|(key, _)| *key)
            .collect()
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
            ConfigError::Invalid { key, problem, .. } if problem.starts_with("unknown key") => {
                Some(format!(
                    "known keys: {} (\"{key}\" is refused because a typo would otherwise be silently ignored)",
                    KNOWN_KEYS.join(", ")
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
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json {
            path: name.to_string(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        let Value::Object(map) = value else {
            return Err(ConfigError::Json {
                path: name.to_string(),
                line: 1,
                column: 1,
                message: "the config must be a JSON object ({ ... })".into(),
            });
        };
        Validator { name, map }.build()
    }
}

/// serde_json appends " at line L column C"; we print the position ourselves.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

struct Validator<'a> {
    name: &'a str,
    map: Map<String, Value>,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, problem: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            path: self.name.to_string(),
            key: key.to_string(),
            problem: problem.to_string(),
        }
    }

    fn build(self) -> Result<Config, ConfigError> {
        for key in self.map.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                let problem = match KNOWN_KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                    Some(known) => format!("unknown key (did you mean \"{known}\"?)"),
                    None => "unknown key".to_string(),
                };
                return Err(self.invalid(key, problem));
            }
        }

        let aliases = self.alias_map()?;
        let default_alias = self.required_string("defaultAlias")?;
        if !aliases.contains_key(&default_alias) {
            let known: Vec<&str> = aliases.keys().map(String::as_str).collect();
            return Err(self.invalid(
                "defaultAlias",
                format!(
                    "\"{default_alias}\" is not an alias in \"aliasToARN\" (aliases: {})",
                    known.join(", ")
                ),
            ));
        }
        let default_policy = match self.map.get("defaultPolicy") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                normalize_policy(value)
                    .map_err(|problem| self.invalid("defaultPolicy", problem))?,
            ),
        };

        let docker_host = self
            .optional_string("dockerHost")?
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string());
        if !["unix://", "tcp://", "http://"]
            .iter()
            .any(|scheme| docker_host.starts_with(scheme))
        {
            return Err(self.invalid(
                "dockerHost",
                format!("\"{docker_host}\" must start with unix://, tcp:// or http://"),
            ));
        }

        let listen_text = self
            .optional_string("listen")?
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen =
            parse_listen(&listen_text).map_err(|problem| self.invalid("listen", problem))?;

        let metadata_url = match self.map.get("metadataURL") {
            None => Some(DEFAULT_METADATA_URL.parse().expect("valid default")),
            Some(Value::Null) => None,
            Some(Value::String(url)) => {
                Some(parse_metadata_url(url).map_err(|p| self.invalid("metadataURL", p))?)
            }
            Some(other) => {
                return Err(self.invalid(
                    "metadataURL",
                    format!("expected a URL string or null, found {}", json_kind(other)),
                ))
            }
        };

        let session_secs = match self.map.get("sessionDuration") {
            None => DEFAULT_SESSION_DURATION.as_secs(),
            Some(value) => value
                .as_u64()
                .filter(|s| (MIN_SESSION_SECS..=MAX_SESSION_SECS).contains(s))
                .ok_or_else(|| {
                    self.invalid(
                        "sessionDuration",
                        format!(
                            "expected whole seconds from {MIN_SESSION_SECS} to {MAX_SESSION_SECS} (STS's limits), found {value}"
                        ),
                    )
                })?,
        };

        let passthrough = match self.map.get("passthrough") {
            None => DEFAULT_PASSTHROUGH.iter().map(|s| s.to_string()).collect(),
            Some(Value::Array(items)) => {
                let mut prefixes = Vec::with_capacity(items.len());
                for item in items {
                    let Some(prefix) = item.as_str() else {
                        return Err(self.invalid(
                            "passthrough",
                            format!("expected strings, found {}", json_kind(item)),
                        ));
                    };
                    let prefix = prefix.trim_matches('/');
                    if prefix.is_empty() || prefix.contains("//") || prefix.contains("..") {
                        return Err(self.invalid(
                            "passthrough",
                            format!("\"{prefix}\" is not a metadata path such as \"meta-data/instance-id\""),
                        ));
                    }
                    if crate::imds::path::names_identity(prefix) {
                        return Err(self.invalid(
                            "passthrough",
                            format!("\"{prefix}\" would pass the host's identity or credentials through; list narrower categories"),
                        ));
                    }
                    prefixes.push(prefix.to_string());
                }
                prefixes
            }
            Some(other) => {
                return Err(self.invalid(
                    "passthrough",
                    format!(
                        "expected a list of path prefixes, found {}",
                        json_kind(other)
                    ),
                ))
            }
        };

        let metrics_listen = match self.optional_string("metricsListen")? {
            None => None,
            Some(text) => Some(
                parse_listen(&text).map_err(|problem| self.invalid("metricsListen", problem))?,
            ),
        };
        let log_format = match self.optional_string("logFormat")? {
            None => LogFormat::Text,
            Some(text) => LogFormat::parse(&text).ok_or_else(|| {
                self.invalid(
                    "logFormat",
                    format!("\"{text}\" is not \"text\" or \"json\""),
                )
            })?,
        };

        let local_metadata_overrides = match self.map.get("localMetadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(overrides)) => {
                LocalMetadata::with_defaults("us-east-1", "123456789012")
                    .apply(overrides)
                    .map_err(|problem| self.invalid("localMetadata", problem))?;
                overrides.clone()
            }
            Some(other) => {
                return Err(self.invalid(
                    "localMetadata",
                    format!("expected an object, found {}", json_kind(other)),
                ))
            }
        };

        let role_env = self.optional_string("roleEnv")?;
        if role_env.as_deref() == Some("") {
            return Err(self.invalid(
                "roleEnv",
                "must name an environment variable, such as \"IAM_ROLE\"",
            ));
        }
        let allow_unmapped = self.optional_bool("allowUnmappedRoles")?.unwrap_or(false);
        if allow_unmapped && role_env.is_none() {
            return Err(self.invalid(
                "allowUnmappedRoles",
                "only applies to roles named by \"roleEnv\"; set roleEnv too",
            ));
        }
        let account_map = match self.map.get("accountMap") {
            None | Some(Value::Null) => HashMap::new(),
            Some(Value::Object(entries)) => {
                let mut map = HashMap::new();
                for (alias, id) in entries {
                    match id.as_str() {
                        Some(id) if is_account_id(id) => {
                            map.insert(alias.clone(), id.to_string());
                        }
                        _ => {
                            return Err(self.invalid(
                                &format!("accountMap.{alias}"),
                                format!("expected a 12-digit account ID, found {id}"),
                            ))
                        }
                    }
                }
                map
            }
            Some(other) => {
                return Err(self.invalid(
                    "accountMap",
                    format!(
                        "expected a map of account alias to account ID, found {}",
                        json_kind(other)
                    ),
                ))
            }
        };
        let default_account = self.optional_string("defaultAccountId")?;
        if let Some(id) = &default_account {
            if !is_account_id(id) {
                return Err(self.invalid(
                    "defaultAccountId",
                    format!("\"{id}\" is not a 12-digit account ID"),
                ));
            }
        }
        let session_key = match self.optional_string("roleSessionKey")? {
            None => None,
            Some(text) => Some(SessionKey::parse(&text).ok_or_else(|| {
                self.invalid(
                    "roleSessionKey",
                    format!("\"{text}\" is not \"Labels:NAME\" or \"Env:NAME\""),
                )
            })?),
        };
        let sts_region = self.optional_string("stsRegion")?;

        Ok(Config {
            source: None,
            roles: RoleMap {
                aliases,
                default_alias,
                default_policy,
                role_env,
                allow_unmapped,
                account_map,
                default_account,
                session_key,
            },
            docker_host,
            listen,
            verbose: self.optional_bool("verbose")?.unwrap_or(false),
            metadata_url,
            state_dir: self
                .optional_string("stateDir")?
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            session_duration: Duration::from_secs(session_secs),
            require_token: self.optional_bool("requireToken")?.unwrap_or(false),
            require_caller_proof: self.optional_bool("requireCallerProof")?.unwrap_or(true),
            passthrough,
            metrics_listen,
            log_format,
            local_metadata_overrides,
            sts_region,
            role_mapping_file: self.optional_string("roleMappingFile")?.map(PathBuf::from),
        })
    }

    fn alias_map(&self) -> Result<crate::FastHashMap<String, Arc<Role>>, ConfigError> {
        let key = "aliasToARN";
        let entries = match self.map.get(key) {
            None => return Err(self.invalid(key, "is required: a map of alias to role ARN")),
            Some(Value::Object(entries)) => entries,
            Some(other) => {
                return Err(self.invalid(
                    key,
                    format!(
                        "expected a map of alias to role ARN, found {}",
                        json_kind(other)
                    ),
                ))
            }
        };
        if entries.is_empty() {
            return Err(self.invalid(key, "is empty: map at least one alias to a role ARN"));
        }
        // BTreeMap so that the first bad entry named is the same on every run.
        let sorted: BTreeMap<&String, &Value> = entries.iter().collect();
        let mut aliases =
            crate::FastHashMap::with_capacity_and_hasher(sorted.len(), Default::default());
        for (alias, value) in sorted {
            let entry_key = format!("{key}.{alias}");
            if alias.is_empty() {
                return Err(self.invalid(&entry_key, "an alias must not be empty"));
            }
            let role = match value {
                Value::String(arn) => Role::new(
                    alias.clone(),
                    RoleArn::parse(arn).map_err(|problem| self.invalid(&entry_key, problem))?,
                ),
                Value::Object(fields) => self.role_object(alias, &entry_key, fields)?,
                other => {
                    return Err(self.invalid(
                        &entry_key,
                        format!(
                            "expected a role ARN string or an object with \"arn\", found {}",
                            json_kind(other)
                        ),
                    ))
                }
            };
            aliases.insert(alias.clone(), Arc::new(role));
        }
        Ok(aliases)
    }

    /// `{"arn": ..., "externalId": ..., "policy": ..., "durationSeconds": ...}`.
    fn role_object(
        &self,
        alias: &str,
        entry_key: &str,
        fields: &Map<String, Value>,
    ) -> Result<Role, ConfigError> {
        let field_error =
            |field: &str, problem: String| self.invalid(&format!("{entry_key}.{field}"), problem);
        for field in fields.keys() {
            if !["arn", "externalId", "policy", "durationSeconds"].contains(&field.as_str()) {
                return Err(field_error(
                    field,
                    "unknown key (known: arn, externalId, policy, durationSeconds)".into(),
                ));
            }
        }
        let arn = match fields.get("arn") {
            Some(Value::String(arn)) => RoleArn::parse(arn).map_err(|p| field_error("arn", p))?,
            _ => return Err(field_error("arn", "is required: the role ARN".into())),
        };
        let mut role = Role::new(alias.to_string(), arn);
        role.external_id = match fields.get("externalId") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if (2..=1224).contains(&id.len()) => {
                Some(Arc::from(id.as_str()))
            }
            Some(other) => {
                return Err(field_error(
                    "externalId",
                    format!(
                        "expected a string of 2 to 1224 characters (STS's limits), found {other}"
                    ),
                ))
            }
        };
        role.policy = match fields.get("policy") {
            None | Some(Value::Null) => None,
            Some(value) => Some(normalize_policy(value).map_err(|p| field_error("policy", p))?),
        };
        role.duration = match fields.get("durationSeconds") {
            None | Some(Value::Null) => None,
            Some(value) => Some(Duration::from_secs(
                value
                    .as_u64()
                    .filter(|s| (MIN_SESSION_SECS..=MAX_SESSION_SECS).contains(s))
                    .ok_or_else(|| {
                        field_error(
                            "durationSeconds",
                            format!("expected whole seconds from {MIN_SESSION_SECS} to {MAX_SESSION_SECS} (STS's limits), found {value}"),
                        )
                    })?,
            )),
        };
        Ok(role)
    }

    fn required_string(&self, key: &str) -> Result<String, ConfigError> {
        self.optional_string(key)?
            .ok_or_else(|| self.invalid(key, "is required"))
    }

    fn optional_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.invalid(
                key,
                format!("expected a string, found {}", json_kind(other)),
            )),
        }
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.invalid(
                key,
                format!("expected true or false, found {}", json_kind(other)),
            )),
        }
    }
}

/// Accepts `IP:PORT`, `[IPv6]:PORT` and the Go style `:PORT` (all interfaces).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let expanded;
    let candidate = if let Some(port) = text.strip_prefix(':') {
        expanded = format!("0.0.0.0:{port}");
        &expanded
    } else {
        text
    };
    candidate.parse().map_err(|_| {
        format!("\"{text}\" is not a listen address such as \"127.0.0.1:18000\" or \":18000\"")
    })
}

fn parse_metadata_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("\"{text}\" is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "\"{text}\" must be an http:// URL such as \"http://169.254.169.254\" (or null for none)"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("\"{text}\" must not have a path or query"));
    }
    Ok(uri)
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
    fn minimal_config_takes_the_documented_defaults() {
        let config = Config::parse(MINIMAL, "test.json").unwrap();
        assert_eq!(config.docker_host, DEFAULT_DOCKER_HOST);
        assert_eq!(config.listen, "0.0.0.0:18000".parse().unwrap());
        assert_eq!(
            config.metadata_url.unwrap().to_string(),
            "http://169.254.169.254/"
        );
        assert_eq!(config.session_duration, Duration::from_secs(3600));
        assert!(!config.verbose && !config.require_token);
        assert!(config.roles.default_policy.is_none());
        assert_eq!(config.roles.get("default").unwrap().arn.name(), "Default");
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
        assert_eq!(config.roles.aliases.len(), 2);
        assert!(config.verbose);
        assert_eq!(config.docker_host, "unix:///var/run/custom-docker.sock");
        assert!(config.roles.default_policy.unwrap().contains("s3:*"));
    }

    #[test]
    fn an_alias_may_be_an_object_with_external_id_policy_and_duration() {
        let text = r#"{"aliasToARN": {
            "plain": "arn:aws:iam::123456789012:role/Plain",
            "partner": {"arn": "arn:aws:iam::210987654321:role/Partner", "externalId": "xyz-123",
                        "policy": {"Version": "2012-10-17"}, "durationSeconds": 1800}},
            "defaultAlias": "plain"}"#;
        let config = Config::parse(text, "t").unwrap();
        let partner = config.roles.get("partner").unwrap();
        assert_eq!(partner.arn.name(), "Partner");
        assert_eq!(partner.external_id.as_deref(), Some("xyz-123"));
        assert_eq!(
            partner.policy.as_deref(),
            Some(r#"{"Version":"2012-10-17"}"#)
        );
        assert_eq!(partner.duration, Some(Duration::from_secs(1800)));
        assert!(config.roles.get("plain").unwrap().external_id.is_none());
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
        assert_eq!(ok.roles.role_env.as_deref(), Some("IAM_ROLE"));
        assert_eq!(
            ok.roles.session_key,
            Some(SessionKey::Label("com.example.session".into()))
        );
        assert_eq!(ok.sts_region.as_deref(), Some("eu-west-1"));
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
            "t: key \"aliasToARN.a.externalID\": unknown key (known: arn, externalId, policy, durationSeconds)"
        );
    }

    #[test]
    fn metadata_url_null_means_no_upstream() {
        let text = r#"{"aliasToARN": {"a": "arn:aws:iam::123456789012:role/A"},
                       "defaultAlias": "a", "metadataURL": null}"#;
        assert!(Config::parse(text, "t").unwrap().metadata_url.is_none());
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
        assert_eq!(before.needs_restart(&after), vec!["listen", "logFormat"]);
        let env_roles = Config::parse(
            r#"{"aliasToARN": {"default": "arn:aws:iam::123456789012:role/Default"},
                "defaultAlias": "default", "roleEnv": "IAM_ROLE", "stsRegion": "eu-west-1"}"#,
            "t",
        )
        .unwrap();
        assert_eq!(
            before.needs_restart(&env_roles),
            vec!["stsRegion", "roleEnv"]
        );
        assert!(before.needs_restart(&before.clone()).is_empty());
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
        let text = include_str!("../config.example.json");
        Config::parse(text, "config.example.json").unwrap();
    }
}
