//! From a container's labels to the role it may assume: alias, ARN, session
//! policy and session name.

use std::fmt;
use std::sync::Arc;

use crate::config::{normalize_policy, RoleMap};
use crate::docker::Container;

/// Label that selects an alias from the config's `aliasToARN`.
pub const ROLE_ALIAS_LABEL: &str = "ec2metaproxy.RoleAlias";
/// Label that holds a session policy (a JSON object as text).
pub const POLICY_LABEL: &str = "ec2metaproxy.Policy";

/// STS limits for `RoleSessionName`: 2..=64 characters of `[\w+=,.@-]`.
const SESSION_NAME_MIN: usize = 2;
const SESSION_NAME_MAX: usize = 64;
/// Characters of the container ID kept in the session name, as `docker ps` shows them.
const SHORT_ID_LEN: usize = 12;

/// A parsed IAM role ARN: `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RoleArn {
    arn: Arc<str>,
    account: Arc<str>,
    name: Arc<str>,
}

impl RoleArn {
    pub fn parse(text: &str) -> Result<RoleArn, String> {
        let problem = || {
            format!("\"{text}\" is not an IAM role ARN (expected arn:aws:iam::ACCOUNT:role/NAME)")
        };
        let mut parts = text.splitn(6, ':');
        let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(problem());
        };
        if !partition.starts_with("aws")
            || account.len() != 12
            || !account.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(problem());
        }
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(problem());
        };
        let name = path_and_name.rsplit('/').next().unwrap_or_default();
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
        if !name_ok {
            return Err(problem());
        }
        Ok(RoleArn {
            arn: Arc::from(text),
            account: Arc::from(account),
            name: Arc::from(name),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.arn
    }

    pub fn shared(&self) -> &Arc<str> {
        &self.arn
    }

    /// The 12-digit account, served as `AccountId` on the extended route.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The last path segment, which IMDS lists as the role's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// An alias of the config and the role it names.
#[derive(Debug)]
pub struct Role {
    pub alias: String,
    pub arn: RoleArn,
}

impl Role {
    pub fn new(alias: String, arn: RoleArn) -> Role {
        Role { alias, arn }
    }
}

/// What a container may assume: the role and the session policy narrowing it.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub role: Arc<Role>,
    pub policy: Option<Arc<str>>,
}

/// Why a container gets no role. Each is answered 404 (a client treats it as
/// "no credentials here" and does not burn retries) and logged with the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("label {ROLE_ALIAS_LABEL}=\"{0}\" names no alias in aliasToARN")]
    UnknownAlias(String),
    #[error("label {POLICY_LABEL} is not a usable policy: {0}")]
    BadPolicy(String),
}

/// Picks the role for a container. An unknown alias fails closed: the default
/// alias is only for containers without the label.
pub fn assign(roles: &RoleMap, container: &Container) -> Result<Assignment, RoleError> {
    let alias = container
        .labels
        .get(ROLE_ALIAS_LABEL)
        .map(String::as_str)
        .unwrap_or(&roles.default_alias);
    let role = roles
        .get(alias)
        .ok_or_else(|| RoleError::UnknownAlias(alias.to_string()))?;
    let policy = match container.labels.get(POLICY_LABEL) {
        Some(text) => Some(
            normalize_policy(&serde_json::Value::String(text.clone()))
                .map_err(RoleError::BadPolicy)?,
        ),
        None => roles.default_policy.clone(),
    };
    Ok(Assignment {
        role: role.clone(),
        policy,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    fn roles() -> RoleMap {
        Config::parse(
            r#"{"aliasToARN": {"default": "arn:aws:iam::123456789012:role/Default",
                               "web": "arn:aws:iam::210987654321:role/team/Web"},
                "defaultAlias": "default",
                "defaultPolicy": {"Version": "2012-10-17"}}"#,
            "t",
        )
        .unwrap()
        .roles
    }

    fn container(labels: &[(&str, &str)]) -> Container {
        Container {
            id: "0123456789abcdef".into(),
            name: "app".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            ips: vec![],
            session_name: "app-0123456789ab".into(),
        }
    }

    #[test]
    fn arn_parts() {
        let arn = RoleArn::parse("arn:aws:iam::210987654321:role/team/Web").unwrap();
        assert_eq!(arn.account(), "210987654321");
        assert_eq!(arn.name(), "Web");
        assert!(RoleArn::parse("arn:aws-cn:iam::210987654321:role/X").is_ok());
        for bad in [
            "",
            "arn:aws:iam::12345:role/X",
            "arn:aws:sts::210987654321:role/X",
            "arn:aws:iam::210987654321:user/X",
            "arn:aws:iam::210987654321:role/",
            "arn:aws:iam:us-east-1:210987654321:role/X",
            "arn:aws:iam::210987654321:role/bad name",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn label_selects_alias_and_no_label_selects_default() {
        let roles = roles();
        let web = assign(&roles, &container(&[(ROLE_ALIAS_LABEL, "web")])).unwrap();
        assert_eq!(web.role.arn.name(), "Web");
        let default = assign(&roles, &container(&[])).unwrap();
        assert_eq!(default.role.alias, "default");
    }

    #[test]
    fn unknown_alias_fails_closed_instead_of_using_the_default() {
        let error = assign(&roles(), &container(&[(ROLE_ALIAS_LABEL, "nope")])).unwrap_err();
        assert_eq!(error, RoleError::UnknownAlias("nope".into()));
        assert_eq!(
            error.to_string(),
            "label ec2metaproxy.RoleAlias=\"nope\" names no alias in aliasToARN"
        );
    }

    #[test]
    fn policy_label_overrides_the_default_policy() {
        let roles = roles();
        let labelled = assign(
            &roles,
            &container(&[(POLICY_LABEL, r#"{"Statement": []}"#)]),
        )
        .unwrap();
        assert_eq!(labelled.policy.as_deref(), Some(r#"{"Statement":[]}"#));
        let unlabelled = assign(&roles, &container(&[])).unwrap();
        assert_eq!(
            unlabelled.policy.as_deref(),
            Some(r#"{"Version":"2012-10-17"}"#)
        );
        let bad = assign(&roles, &container(&[(POLICY_LABEL, "allow all")]));
        assert!(matches!(bad, Err(RoleError::BadPolicy(_))));
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
}
