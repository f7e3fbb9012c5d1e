//! What serde's types cannot say: ranges, ARNs, policies, addresses, and
//! keys that depend on each other. Each check names the key it refuses.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::schema::{RawAlias, RawConfig, RawContainerCredentials, RawListen, RawRole};
use super::{
    Config, ContainerCredentials, FixedConfig, LiveConfig, DEFAULT_DOCKER_HOST, DEFAULT_LISTEN,
    DEFAULT_METADATA_URL, DEFAULT_PASSTHROUGH, DEFAULT_SESSION_DURATION, DEFAULT_STATE_DIR,
};
use crate::container::normalize_policy;
use crate::imds;
use crate::logging::LogFormat;
use crate::roles::{is_account_id, Role, RoleArn, SessionKey};
use crate::tagging::{
    check_tag_key, identity_char, tag_char, Tagging, Template, MAX_SESSION_NAME,
    MAX_SOURCE_IDENTITY, MAX_TAGS, MAX_TAG_VALUE, MIN_IDENTITY,
};

/// STS refuses AssumeRole durations outside 15 minutes ..= 12 hours.
const MIN_SESSION_SECS: u64 = 900;
const MAX_SESSION_SECS: u64 = 43_200;

/// A refused key (with its path, such as `aliasToARN.web.arn`) and why.
#[derive(Debug)]
pub(super) struct Invalid {
    pub key: String,
    pub problem: String,
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = Invalid;

    fn try_from(raw: RawConfig) -> Result<Config, Invalid> {
        let tagging = Arc::new(tagging(
            "",
            RawTagging {
                session_tags: raw.session_tags,
                transitive_tag_keys: raw.transitive_tag_keys,
                source_identity: raw.source_identity,
                role_session_name: raw.role_session_name,
            },
            &Tagging::default(),
        )?);
        let aliases = aliases(raw.alias_to_arn, &tagging)?;
        let default_alias = raw.default_alias;
        if !aliases.contains_key(&default_alias) {
            let mut known: Vec<&str> = aliases.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(invalid(
                "defaultAlias",
                format!(
                    "\"{default_alias}\" is not an alias in \"aliasToARN\" (aliases: {})",
                    known.join(", ")
                ),
            ));
        }
        let default_policy = policy("defaultPolicy", raw.default_policy)?;

        let docker_host = raw
            .docker_host
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string());
        if !["unix://", "tcp://", "http://"]
            .iter()
            .any(|scheme| docker_host.starts_with(scheme))
        {
            return Err(invalid(
                "dockerHost",
                format!("\"{docker_host}\" must start with unix://, tcp:// or http://"),
            ));
        }
        let listen = listen_addresses(raw.listen).map_err(|problem| invalid("listen", problem))?;
        let metadata_url = match raw.metadata_url {
            None => Some(http::Uri::from_static(DEFAULT_METADATA_URL)),
            Some(None) => None,
            Some(Some(url)) => {
                Some(parse_metadata_url(&url).map_err(|p| invalid("metadataURL", p))?)
            }
        };
        let session_duration = match raw.session_duration {
            None => DEFAULT_SESSION_DURATION,
            Some(secs) => seconds("sessionDuration", secs)?,
        };
        let passthrough = match raw.passthrough {
            None => DEFAULT_PASSTHROUGH.iter().map(|s| s.to_string()).collect(),
            Some(prefixes) => prefixes
                .iter()
                .map(|prefix| passthrough_prefix(prefix))
                .collect::<Result<_, _>>()?,
        };
        let metrics_listen = match raw.metrics_listen {
            None => None,
            Some(text) => {
                Some(parse_listen(&text).map_err(|problem| invalid("metricsListen", problem))?)
            }
        };
        let log_format = match raw.log_format {
            None => LogFormat::Text,
            Some(text) => LogFormat::parse(&text).ok_or_else(|| {
                invalid(
                    "logFormat",
                    format!("\"{text}\" is not \"text\" or \"json\""),
                )
            })?,
        };

        let role_env = raw.role_env;
        if role_env.as_deref() == Some("") {
            return Err(invalid(
                "roleEnv",
                "must name an environment variable, such as \"IAM_ROLE\"",
            ));
        }
        let allow_unmapped = raw.allow_unmapped_roles.unwrap_or(false);
        if allow_unmapped && role_env.is_none() {
            return Err(invalid(
                "allowUnmappedRoles",
                "only applies to roles named by \"roleEnv\"; set roleEnv too",
            ));
        }
        let mut account_map = HashMap::new();
        for (alias, id) in raw.account_map.unwrap_or_default() {
            if !is_account_id(&id) {
                return Err(invalid(
                    format!("accountMap.{alias}"),
                    format!("expected a 12-digit account ID, found \"{id}\""),
                ));
            }
            account_map.insert(alias, id);
        }
        let default_account = raw.default_account_id;
        if let Some(id) = default_account.as_ref().filter(|id| !is_account_id(id)) {
            return Err(invalid(
                "defaultAccountId",
                format!("\"{id}\" is not a 12-digit account ID"),
            ));
        }
        let role_session_key = match raw.role_session_key {
            None => None,
            Some(text) => Some(SessionKey::parse(&text).ok_or_else(|| {
                invalid(
                    "roleSessionKey",
                    format!("\"{text}\" is not \"Labels:NAME\" or \"Env:NAME\""),
                )
            })?),
        };

        let container_credentials = match raw.container_credentials {
            None => None,
            Some(raw) => Some(container_credentials(raw, &aliases)?),
        };

        Ok(Config {
            source: None,
            live: LiveConfig {
                aliases,
                default_alias,
                default_policy,
                allow_unmapped,
                account_map,
                default_account,
                imds: imds::Settings {
                    passthrough,
                    require_token: raw.require_token.unwrap_or(false),
                },
                tagging,
            },
            fixed: FixedConfig {
                listen,
                docker_host,
                metadata_url,
                state_dir: raw
                    .state_dir
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
                session_duration,
                metrics_listen,
                log_format,
                verbose: raw.verbose.unwrap_or(false),
                local_metadata: raw.local_metadata.unwrap_or_default(),
                sts_region: raw.sts_region,
                role_mapping_file: raw.role_mapping_file,
                require_caller_proof: raw.require_caller_proof.unwrap_or(true),
                role_env,
                role_session_key,
                container_credentials,
            },
        })
    }
}

/// `containerCredentials`: at least one listener, grants named so that
/// they make a file name and an STS session name, each naming an alias.
fn container_credentials(
    raw: RawContainerCredentials,
    aliases: &crate::FastHashMap<String, Arc<Role>>,
) -> Result<ContainerCredentials, Invalid> {
    if raw.listen.is_empty() && raw.address_listen.is_empty() {
        return Err(invalid(
            "containerCredentials.listen",
            "needs at least one IP:PORT, such as \"127.0.0.1:18001\" (or addressListen, for \
             callers by address)",
        ));
    }
    let addresses = |key: &str, list: &[String]| {
        list.iter()
            .enumerate()
            .map(|(i, text)| {
                parse_listen(text)
                    .map_err(|p| invalid(format!("containerCredentials.{key}.{i}"), p))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let listen = addresses("listen", &raw.listen)?;
    let address_listen = addresses("addressListen", &raw.address_listen)?;
    let mut grants = BTreeMap::new();
    for (name, grant) in raw.grants {
        let key = format!("containerCredentials.grants.{name}");
        if !(2..=64).contains(&name.len())
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                key,
                "a grant name is 2 to 64 letters, digits, '-' or '_' (it names the token file \
                 and the STS session)",
            ));
        }
        if !aliases.contains_key(&grant.alias) {
            return Err(invalid(
                format!("{key}.alias"),
                format!("\"{}\" is not an alias in \"aliasToARN\"", grant.alias),
            ));
        }
        grants.insert(name, grant.alias);
    }
    Ok(ContainerCredentials {
        listen,
        grants,
        address_listen,
    })
}

fn aliases(
    entries: std::collections::BTreeMap<String, RawAlias>,
    global: &Tagging,
) -> Result<crate::FastHashMap<String, Arc<Role>>, Invalid> {
    if entries.is_empty() {
        return Err(invalid(
            "aliasToARN",
            "is empty: map at least one alias to a role ARN",
        ));
    }
    let mut aliases =
        crate::FastHashMap::with_capacity_and_hasher(entries.len(), Default::default());
    // Sorted (a BTreeMap), so the first bad entry named is the same on every run.
    for (alias, entry) in entries {
        let key = format!("aliasToARN.{alias}");
        if alias.is_empty() {
            return Err(invalid(key, "an alias must not be empty"));
        }
        let role = match entry {
            RawAlias::Arn(arn) => Role::new(
                alias.clone(),
                RoleArn::parse(&arn).map_err(|problem| invalid(&key, problem))?,
            ),
            RawAlias::Role(role) => role_object(&alias, &key, *role, global)?,
        };
        aliases.insert(alias, Arc::new(role));
    }
    Ok(aliases)
}

fn role_object(alias: &str, key: &str, raw: RawRole, global: &Tagging) -> Result<Role, Invalid> {
    let field = |name: &str| format!("{key}.{name}");
    let arn = RoleArn::parse(&raw.arn).map_err(|problem| invalid(field("arn"), problem))?;
    let mut role = Role::new(alias.to_string(), arn);
    role.external_id = match raw.external_id {
        None => None,
        Some(id) if (2..=1224).contains(&id.len()) => Some(Arc::from(id)),
        Some(id) => {
            return Err(invalid(
                field("externalId"),
                format!("expected a string of 2 to 1224 characters (STS's limits), found \"{id}\""),
            ))
        }
    };
    role.policy = policy(&field("policy"), raw.policy)?;
    role.duration = match raw.duration_seconds {
        None => None,
        Some(secs) => Some(seconds(&field("durationSeconds"), secs)?),
    };
    let own = RawTagging {
        session_tags: raw.session_tags,
        transitive_tag_keys: raw.transitive_tag_keys,
        source_identity: raw.source_identity,
        role_session_name: raw.role_session_name,
    };
    if !own.is_empty() {
        role.tagging = Some(Arc::new(tagging(&format!("{key}."), own, global)?));
    }
    Ok(role)
}

/// The tagging keys, globally or in one alias.
struct RawTagging {
    session_tags: Option<std::collections::BTreeMap<String, String>>,
    transitive_tag_keys: Option<Vec<String>>,
    source_identity: Option<String>,
    role_session_name: Option<String>,
}

impl RawTagging {
    fn is_empty(&self) -> bool {
        self.session_tags.is_none()
            && self.transitive_tag_keys.is_none()
            && self.source_identity.is_none()
            && self.role_session_name.is_none()
    }
}

/// Checks the tagging keys under `prefix` (`""` or `aliasToARN.web.`) and
/// lays them over `global`: templates that could never fit STS's rules are
/// refused here rather than cut on every request.
fn tagging(prefix: &str, raw: RawTagging, global: &Tagging) -> Result<Tagging, Invalid> {
    let key = |name: &str| format!("{prefix}{name}");
    let template = |name: &str, text: &str, max: usize, allowed: fn(char) -> bool| {
        let template = Template::parse(text).map_err(|problem| invalid(key(name), problem))?;
        template
            .check(MIN_IDENTITY.min(max), max, allowed)
            .map_err(|problem| invalid(key(name), problem))?;
        Ok::<_, Invalid>(template)
    };
    let tags = match raw.session_tags {
        None => None,
        Some(entries) => {
            if entries.len() > MAX_TAGS {
                return Err(invalid(
                    key("sessionTags"),
                    format!("{} tags, over STS's {MAX_TAGS}", entries.len()),
                ));
            }
            let mut tags = Vec::with_capacity(entries.len());
            for (tag, text) in entries {
                let name = format!("sessionTags.{tag}");
                check_tag_key(&tag).map_err(|problem| invalid(key(&name), problem))?;
                let value = Template::parse(&text).map_err(|p| invalid(key(&name), p))?;
                value
                    .check(0, MAX_TAG_VALUE, tag_char)
                    .map_err(|p| invalid(key(&name), p))?;
                tags.push((Arc::from(tag), value));
            }
            Some(tags)
        }
    };
    let source_identity = raw
        .source_identity
        .map(|text| template("sourceIdentity", &text, MAX_SOURCE_IDENTITY, identity_char))
        .transpose()?;
    let session_name = raw
        .role_session_name
        .map(|text| template("roleSessionName", &text, MAX_SESSION_NAME, identity_char))
        .transpose()?;
    let transitive = raw
        .transitive_tag_keys
        .map(|keys| keys.into_iter().map(Arc::<str>::from).collect::<Vec<_>>());
    let merged = Tagging {
        tags,
        transitive,
        source_identity,
        session_name,
    }
    .over(global);
    // STS refuses a transitive key that names no tag of the call.
    for transitive in merged.transitive.iter().flatten() {
        let known = merged
            .tags
            .iter()
            .flatten()
            .any(|(tag, _)| tag == transitive);
        if !known {
            return Err(invalid(
                key("transitiveTagKeys"),
                format!("\"{transitive}\" is not a key of sessionTags"),
            ));
        }
    }
    Ok(merged)
}

fn policy(key: &str, value: Option<Value>) -> Result<Option<Arc<str>>, Invalid> {
    value
        .map(|value| normalize_policy(&value).map_err(|problem| invalid(key, problem)))
        .transpose()
}

fn seconds(key: &str, secs: u64) -> Result<Duration, Invalid> {
    if (MIN_SESSION_SECS..=MAX_SESSION_SECS).contains(&secs) {
        return Ok(Duration::from_secs(secs));
    }
    Err(invalid(
        key,
        format!(
            "expected whole seconds from {MIN_SESSION_SECS} to {MAX_SESSION_SECS} (STS's limits), found {secs}"
        ),
    ))
}

fn passthrough_prefix(prefix: &str) -> Result<String, Invalid> {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() || prefix.contains("//") || prefix.contains("..") {
        return Err(invalid(
            "passthrough",
            format!("\"{prefix}\" is not a metadata path such as \"meta-data/instance-id\""),
        ));
    }
    if crate::imds::path::names_identity(prefix) {
        return Err(invalid(
            "passthrough",
            format!("\"{prefix}\" would pass the host's identity or credentials through; list narrower categories"),
        ));
    }
    Ok(prefix.to_string())
}

/// Every address of `listen`: at least one, none twice.
fn listen_addresses(raw: Option<RawListen>) -> Result<Vec<SocketAddr>, String> {
    let texts = match raw {
        None => vec![DEFAULT_LISTEN.to_string()],
        Some(RawListen::One(text)) => vec![text],
        Some(RawListen::Many(texts)) => texts,
    };
    if texts.is_empty() {
        return Err("the list is empty: give at least one address".into());
    }
    let mut addresses: Vec<SocketAddr> = Vec::with_capacity(texts.len());
    for text in &texts {
        let address = parse_listen(text)?;
        if addresses.contains(&address) {
            return Err(format!("\"{text}\" is listed twice"));
        }
        addresses.push(address);
    }
    Ok(addresses)
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
