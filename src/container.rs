//! The model every layer shares: a running container as the proxy needs
//! it, its labels, and the STS session name that names it. A leaf: it knows
//! no platform, no config file and no protocol.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde_json::Value;

use crate::sys::process::Connection;
use crate::sys::ProcessWatch;

/// Label that selects an alias from the config's `aliasToARN`.
pub const ROLE_ALIAS_LABEL: &str = "ec2metaproxy.RoleAlias";
/// Label that holds a session policy (a JSON object as text).
pub const POLICY_LABEL: &str = "ec2metaproxy.Policy";

/// STS limits for `RoleSessionName`: 2..=64 characters of `[\w+=,.@-]`.
const SESSION_NAME_MIN: usize = 2;
const SESSION_NAME_MAX: usize = 64;
/// Characters of the container ID kept in the session name, as `docker ps` shows them.
const SHORT_ID_LEN: usize = 12;

/// A container's labels, or the variables of its environment the config
/// reads. Read on every request (the role alias), hence the fast hasher.
pub type StringMap = crate::FastHashMap<String, String>;

/// A running container as the proxy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub labels: StringMap,
    pub ips: Vec<IpAddr>,
    /// Computed once here so the request path does not rebuild it.
    pub session_name: Arc<str>,
    /// Only the variables the config reads (`roleEnv` and friends); the rest
    /// of a container's environment, which may hold secrets, is never kept.
    pub env: StringMap,
    /// Its init process, when the kernel can tell us that it exited.
    pub process: Process,
    /// Its `ec2metaproxy.Policy` label, parsed and normalised once here:
    /// the request path would otherwise parse the JSON on every request.
    pub policy_label: Option<Result<Arc<str>, String>>,
    /// The image it was started from, as Docker names it; empty when unknown.
    pub image: String,
}

/// What the proxy knows of a container's init process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Process {
    /// Listed but not inspected yet: the list API does not give pids.
    #[default]
    NotInspected,
    /// Inspected, but its pid cannot be checked from here (the platform
    /// found no way to tell its exit).
    Unwatched,
    Watched(Arc<ProcessWatch>),
}

impl Container {
    pub fn new(id: String, name: &str, labels: StringMap, ips: Vec<IpAddr>) -> Container {
        let name = name.trim_start_matches('/').to_string();
        let session_name = Arc::from(session_name(&name, &id));
        let policy_label = labels
            .get(POLICY_LABEL)
            .map(|text| normalize_policy(&serde_json::Value::String(text.clone())));
        Container {
            id,
            name,
            labels,
            policy_label,
            ips,
            session_name,
            env: StringMap::default(),
            process: Process::NotInspected,
            image: String::new(),
        }
    }

    pub fn with_image(mut self, image: String) -> Container {
        self.image = image;
        self
    }

    pub fn with_process(mut self, process: Process) -> Container {
        self.process = process;
        self
    }

    /// True when the kernel says the container's init process has exited,
    /// so its addresses may already be another container's. One `poll(2)`.
    pub fn has_exited(&self) -> bool {
        match &self.process {
            Process::Watched(watch) => watch.has_exited(),
            Process::NotInspected | Process::Unwatched => false,
        }
    }

    /// Whether the connection from `peer` to one of `dialled` (the
    /// addresses the caller may have dialled to reach the proxy: before and
    /// after NAT) is this container's own: its side of it must be in the
    /// container's network namespace. A neighbour that wears the
    /// container's address from its own namespace is never found there.
    pub fn connection(&self, peer: SocketAddr, dialled: &[SocketAddr]) -> Connection {
        match &self.process {
            Process::Watched(watch) => watch.connection(peer, dialled),
            Process::Unwatched => Connection::Unknown(
                "its process cannot be checked from here (the proxy is not in Docker's PID \
                 namespace, or Docker is remote)"
                    .into(),
            ),
            Process::NotInspected => {
                Connection::Unknown("its process is not known yet (not inspected)".into())
            }
        }
    }

    pub fn with_env(mut self, env: StringMap) -> Container {
        self.env = env;
        self
    }

    /// True for an address of `roleMappingFile`, which stands in as a
    /// container with no ID.
    pub fn is_stand_in(&self) -> bool {
        self.id.is_empty()
    }

    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

/// A role session name that names the container in CloudTrail: its name and
/// short ID, cut to STS's limits, other characters replaced by `-`.
pub fn session_name(container_name: &str, container_id: &str) -> String {
    let sanitize = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let id: String = sanitize(container_id).chars().take(SHORT_ID_LEN).collect();
    let name = sanitize(container_name.trim_start_matches('/'));
    let room = SESSION_NAME_MAX - id.len() - usize::from(!id.is_empty());
    let name: String = name.chars().take(room).collect();
    let mut session = match (name.is_empty(), id.is_empty()) {
        (false, false) => format!("{name}-{id}"),
        (false, true) => name,
        (true, _) => id,
    };
    while session.len() < SESSION_NAME_MIN {
        session.push('-');
    }
    session
}

/// How a message names a JSON value's type.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A session policy: a JSON object, given inline or as a string holding one
/// (the Go fork and the `ec2metaproxy.Policy` label use the string form).
/// Returns the compact JSON text STS is sent.
pub fn normalize_policy(value: &Value) -> Result<Arc<str>, String> {
    let parsed;
    let object = match value {
        Value::Object(_) => value,
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|e| format!("the policy is not valid JSON: {e}"))?;
            if !parsed.is_object() {
                return Err(format!(
                    "the policy must be a JSON object, found {}",
                    json_kind(&parsed)
                ));
            }
            &parsed
        }
        other => {
            return Err(format!(
                "the policy must be a JSON object, found {}",
                json_kind(other)
            ))
        }
    };
    Ok(Arc::from(object.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_label_is_parsed_once_when_the_container_is_indexed() {
        let labelled = |policy: &str| {
            let labels = StringMap::from_iter([(POLICY_LABEL.to_string(), policy.to_string())]);
            Container::new("c".into(), "/c", labels, vec![])
        };
        let good = labelled(r#"{ "Statement" : [] }"#);
        assert_eq!(
            good.policy_label.as_ref().unwrap().as_deref(),
            Ok(r#"{"Statement":[]}"#)
        );
        let bad = labelled("allow all");
        assert!(bad
            .policy_label
            .unwrap()
            .unwrap_err()
            .contains("not valid JSON"));
        assert_eq!(
            Container::new(
                "c".into(),
                "c",
                StringMap::default(),
                vec!["10.0.0.2".parse().unwrap()]
            )
            .policy_label,
            None
        );
    }

    #[test]
    fn session_names_fit_sts_rules() {
        assert_eq!(session_name("/web", "0123456789abcdef"), "web-0123456789ab");
        assert_eq!(session_name("/a b:c", "ff"), "a-b-c-ff");
        let long = session_name(&"x".repeat(200), "0123456789abcdef");
        assert_eq!(long.len(), 64);
        assert!(long.ends_with("-0123456789ab"));
        assert_eq!(session_name("", ""), "--");
        assert_eq!(session_name("/é", ""), "-".repeat(2));
    }

    #[test]
    fn policies_are_sent_as_compact_json() {
        let inline: Value = serde_json::json!({"Version": "2012-10-17"});
        assert_eq!(
            &*normalize_policy(&inline).unwrap(),
            r#"{"Version":"2012-10-17"}"#
        );
        let text = Value::String("{ \"Version\" : \"2012-10-17\" }".into());
        assert_eq!(
            &*normalize_policy(&text).unwrap(),
            r#"{"Version":"2012-10-17"}"#
        );
        assert!(normalize_policy(&Value::String("{".into())).is_err());
    }
}
