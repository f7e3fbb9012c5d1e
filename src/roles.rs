//! From a container's labels to the role it may assume: the alias map,
//! alias, ARN, session policy and session name, and IAM's answer for a bare
//! role name.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use crate::container::{session_name, Container, POLICY_LABEL, ROLE_ALIAS_LABEL};
use crate::tagging::{Facts, HostFacts, Tagging};

/// A parsed IAM role ARN: `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleArn {
    arn: Arc<str>,
    account: Arc<str>,
    name: Arc<str>,
}

/// The account and name are parts of the ARN: hashing it alone is enough
/// (and it is hashed on every request, in the credential cache's key).
impl std::hash::Hash for RoleArn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.arn.hash(state);
    }
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
        if !partition.starts_with("aws") || !is_account_id(account) {
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

/// An alias of the config and the role it names, with what AssumeRole is
/// told for it (an alias may be a plain ARN or an object with these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub alias: String,
    pub arn: RoleArn,
    pub external_id: Option<Arc<str>>,
    pub policy: Option<Arc<str>>,
    pub duration: Option<Duration>,
    /// The alias's own tagging settings, already laid over the global
    /// ones; `None`: the global ones.
    pub tagging: Option<Arc<Tagging>>,
}

impl Role {
    pub fn new(alias: String, arn: RoleArn) -> Role {
        Role {
            alias,
            arn,
            external_id: None,
            policy: None,
            duration: None,
            tagging: None,
        }
    }
}

/// The alias map with its default and the default session policy.
#[derive(Debug, Clone)]
pub struct RoleMap {
    pub aliases: crate::FastHashMap<String, Arc<Role>>,
    pub default_alias: String,
    pub default_policy: Option<Arc<str>>,
    /// Container environment variable that names an alias (or role) when no
    /// label does: `roleEnv`, for hosts migrating from lyft's metadataproxy.
    pub role_env: Option<String>,
    /// Let `roleEnv` name roles outside the alias map.
    pub allow_unmapped: bool,
    /// Account alias -> account ID, for `name@account-alias`.
    pub account_map: HashMap<String, String>,
    pub default_account: Option<String>,
    pub session_key: Option<SessionKey>,
    /// `sessionTags`, `transitiveTagKeys`, `sourceIdentity`, `roleSessionName`.
    pub tagging: Arc<Tagging>,
    /// `{hostname}` and `{instanceId}` of the templates.
    pub host: Arc<HostFacts>,
}

impl RoleMap {
    pub fn get(&self, alias: &str) -> Option<&Arc<Role>> {
        self.aliases.get(alias)
    }

    /// The container environment variables this map reads.
    pub fn env_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if let Some(variable) = &self.role_env {
            keys.push(variable.clone());
            keys.push(EXTERNAL_ID_ENV.to_string());
        }
        if let Some(SessionKey::Env(variable)) = &self.session_key {
            keys.push(variable.clone());
        }
        keys
    }
}

/// An AWS account ID: twelve digits.
pub fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Where a role session name comes from (`roleSessionKey`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum SessionKey {
    Label(String),
    Env(String),
}

impl SessionKey {
    /// `Labels:NAME` or `Env:NAME`, as lyft's metadataproxy spells it.
    pub fn parse(text: &str) -> Option<SessionKey> {
        let (kind, name) = text.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "Labels" | "Label" => Some(SessionKey::Label(name.to_string())),
            "Env" => Some(SessionKey::Env(name.to_string())),
            _ => None,
        }
    }
}

/// Container environment variable holding an external ID, read when
/// environment-selected roles are on (lyft's name).
pub const EXTERNAL_ID_ENV: &str = "IAM_EXTERNAL_ID";

/// What a container may assume, and how.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub role: Arc<Role>,
    pub policy: Option<Arc<str>>,
    pub external_id: Option<Arc<str>>,
    pub session_name: Arc<str>,
    /// Session tags, cleaned to STS's rules; empty when none are configured.
    pub tags: Arc<[(Arc<str>, Arc<str>)]>,
    pub transitive_tag_keys: Arc<[Arc<str>]>,
    pub source_identity: Option<Arc<str>>,
}

/// Resolves a bare role name to its ARN (IAM GetRole), for unmapped roles
/// when no default account is configured.
#[async_trait::async_trait]
pub trait RoleLookup: Send + Sync + 'static {
    async fn role_arn(&self, name: &str) -> Result<RoleArn, String>;
}

/// Why a container gets no role. Each is answered 404 (a client treats it as
/// "no credentials here" and does not burn retries) and logged with the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("label {ROLE_ALIAS_LABEL}=\"{0}\" names no alias in aliasToARN")]
    UnknownAlias(String),
    #[error("roleMappingFile maps this address to \"{0}\", which names no alias in aliasToARN")]
    UnknownMappedAlias(String),
    #[error(
        "environment {0}=\"{1}\" names no alias in aliasToARN (and allowUnmappedRoles is off)"
    )]
    UnknownEnvRole(String, String),
    #[error("environment {0}=\"{1}\" is not a role: {2}")]
    BadEnvRole(String, String, String),
    #[error("label {POLICY_LABEL} is not a usable policy: {0}")]
    BadPolicy(String),
    #[error("grant \"{0}\" names alias \"{1}\", which is not in aliasToARN")]
    UnknownGrantAlias(String, String),
}

/// Picks the role for a container. An unknown alias fails closed: the default
/// alias is only for containers that name none.
///
/// Order: the `ec2metaproxy.RoleAlias` label; else, when `roleEnv` is set,
/// that variable of the container's environment (an alias, or with
/// `allowUnmappedRoles` a role name, `name@account`, or an ARN); else the
/// default alias.
pub async fn assign(
    roles: &RoleMap,
    container: &Container,
    lookup: &dyn RoleLookup,
) -> Result<Assignment, RoleError> {
    let mut chosen_by_env = false;
    let role = match container.labels.get(ROLE_ALIAS_LABEL) {
        Some(alias) => roles.get(alias).cloned().ok_or_else(|| {
            if container.is_stand_in() {
                RoleError::UnknownMappedAlias(alias.clone())
            } else {
                RoleError::UnknownAlias(alias.clone())
            }
        })?,
        None => match env_role(roles, container).inspect(|_| chosen_by_env = true) {
            Some((variable, value)) => match roles.get(value) {
                Some(role) => role.clone(),
                None if roles.allow_unmapped => {
                    Arc::new(unmapped_role(roles, variable, value, lookup).await?)
                }
                None => {
                    return Err(RoleError::UnknownEnvRole(
                        variable.to_string(),
                        value.to_string(),
                    ))
                }
            },
            None => roles
                .get(&roles.default_alias)
                .cloned()
                .ok_or_else(|| RoleError::UnknownAlias(roles.default_alias.clone()))?,
        },
    };
    let policy = match &container.policy_label {
        Some(parsed) => Some(parsed.clone().map_err(RoleError::BadPolicy)?),
        None => role.policy.clone().or_else(|| roles.default_policy.clone()),
    };
    // The operator's external ID always wins: it guards the role against a
    // confused deputy, so a container must not be able to replace it. A
    // container's own IAM_EXTERNAL_ID only accompanies a role it chose itself.
    let container_external_id = chosen_by_env
        .then(|| container.env.get(EXTERNAL_ID_ENV))
        .flatten()
        .map(|id| Arc::from(id.as_str()));
    let tagging = role.tagging.as_deref().unwrap_or(&roles.tagging);
    let facts = Facts {
        container,
        alias: &role.alias,
        host: &roles.host,
    };
    let tags = tagging.render_tags(&facts);
    Ok(Assignment {
        external_id: role.external_id.clone().or(container_external_id),
        policy,
        session_name: container_session(roles, container, &role),
        transitive_tag_keys: tagging.render_transitive(&tags),
        source_identity: tagging.render_source_identity(&facts),
        tags,
        role,
    })
}

/// The role of a grant of the container credentials door: its alias, no
/// container. The session is named after the grant, so CloudTrail says
/// which grant's token asked. A grant's alias never falls back to the
/// default alias: a grant whose alias is gone gets nothing.
pub fn grant_assignment(
    roles: &RoleMap,
    grant: &str,
    alias: &str,
) -> Result<Assignment, RoleError> {
    let role = roles
        .get(alias)
        .cloned()
        .ok_or_else(|| RoleError::UnknownGrantAlias(grant.to_string(), alias.to_string()))?;
    Ok(Assignment {
        policy: role.policy.clone().or_else(|| roles.default_policy.clone()),
        external_id: role.external_id.clone(),
        session_name: Arc::from(session_name(grant, "")),
        // Tag templates speak of a container; a grant has none to render.
        tags: Arc::from([]),
        transitive_tag_keys: Arc::from([]),
        source_identity: None,
        role,
    })
}

/// The STS session name for a container: from the `roleSessionName`
/// template when set; else from `roleSessionKey`'s label or variable when
/// set and present; else the container's name and short ID. One place, so
/// the cache can forget exactly the sessions a container used.
pub fn container_session(roles: &RoleMap, container: &Container, role: &Role) -> Arc<str> {
    let tagging = role.tagging.as_deref().unwrap_or(&roles.tagging);
    let facts = Facts {
        container,
        alias: &role.alias,
        host: &roles.host,
    };
    if let Some(name) = tagging.render_session_name(&facts) {
        return name;
    }
    let chosen = match &roles.session_key {
        Some(SessionKey::Label(name)) => container.labels.get(name),
        Some(SessionKey::Env(name)) => container.env.get(name),
        None => None,
    };
    match chosen {
        Some(value) if !value.is_empty() => Arc::from(session_name(value, "")),
        _ => container.session_name.clone(),
    }
}

fn env_role<'a>(roles: &'a RoleMap, container: &'a Container) -> Option<(&'a str, &'a str)> {
    let variable = roles.role_env.as_deref()?;
    let value = container.env.get(variable)?;
    (!value.is_empty()).then_some((variable, value.as_str()))
}

/// A role the alias map does not name: an ARN, `name@account-id`,
/// `name@account-alias` (through `accountMap`), or a bare name in
/// `defaultAccountId` (else resolved with IAM GetRole).
async fn unmapped_role(
    roles: &RoleMap,
    variable: &str,
    value: &str,
    lookup: &dyn RoleLookup,
) -> Result<Role, RoleError> {
    let bad = |problem: String| RoleError::BadEnvRole(variable.into(), value.into(), problem);
    let arn = if value.starts_with("arn:") {
        RoleArn::parse(value).map_err(bad)?
    } else if let Some((name, account)) = value.split_once('@') {
        let account = match roles.account_map.get(account) {
            Some(id) => id.as_str(),
            None if is_account_id(account) => account,
            None => {
                return Err(bad(format!(
                    "account \"{account}\" is neither an ID nor in accountMap"
                )))
            }
        };
        RoleArn::parse(&format!("arn:aws:iam::{account}:role/{name}")).map_err(bad)?
    } else if let Some(account) = &roles.default_account {
        RoleArn::parse(&format!("arn:aws:iam::{account}:role/{value}")).map_err(bad)?
    } else {
        lookup.role_arn(value).await.map_err(bad)?
    };
    Ok(Role::new(format!("{variable}={value}"), arn))
}

/// IAM GetRole, for unmapped environment roles named without an account.
/// Answers are cached: a role's ARN does not change while it exists.
pub struct IamRoleLookup {
    client: aws_sdk_iam::Client,
    known: std::sync::Mutex<HashMap<String, RoleArn>>,
}

impl IamRoleLookup {
    pub fn new(config: &aws_config::SdkConfig) -> IamRoleLookup {
        IamRoleLookup {
            client: aws_sdk_iam::Client::new(config),
            known: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait::async_trait]
impl RoleLookup for IamRoleLookup {
    async fn role_arn(&self, name: &str) -> Result<RoleArn, String> {
        if let Some(arn) = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Ok(arn.clone());
        }
        use aws_sdk_iam::error::ProvideErrorMetadata;
        let output = self
            .client
            .get_role()
            .role_name(name)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(service) => format!(
                    "IAM GetRole {name}: {}: {}",
                    service.code().unwrap_or("Unknown"),
                    service.message().unwrap_or("no message")
                ),
                None => format!(
                    "IAM GetRole {name}: {}",
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                ),
            })?;
        let arn = output
            .role
            .map(|role| role.arn)
            .ok_or_else(|| format!("IAM GetRole {name}: no role in the answer"))?;
        let arn = RoleArn::parse(&arn)?;
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), arn.clone());
        Ok(arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn roles() -> RoleMap {
        Config::parse(
            r#"{"aliasToARN": {"default": "arn:aws:iam::123456789012:role/Default",
                               "web": "arn:aws:iam::210987654321:role/team/Web"},
                "defaultAlias": "default",
                "defaultPolicy": {"Version": "2012-10-17"}}"#,
            "t",
        )
        .unwrap()
        .roles()
    }

    fn container(labels: &[(&str, &str)]) -> Container {
        Container::new(
            "0123456789abcdef".into(),
            "/app",
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            vec![],
        )
    }

    fn with_env(container: Container, env: &[(&str, &str)]) -> Container {
        container.with_env(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// A GetRole stand-in that knows one role and counts calls.
    #[derive(Default)]
    struct FakeIam {
        calls: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl RoleLookup for FakeIam {
        async fn role_arn(&self, name: &str) -> Result<RoleArn, String> {
            self.calls.lock().unwrap().push(name.to_string());
            match name {
                "Known" => RoleArn::parse("arn:aws:iam::333333333333:role/path/Known"),
                _ => Err(format!("IAM GetRole {name}: NoSuchEntity: not found")),
            }
        }
    }

    async fn pick(roles: &RoleMap, container: &Container) -> Result<Assignment, RoleError> {
        assign(roles, container, &FakeIam::default()).await
    }

    /// A grant gets its alias's role under the grant's name, and never the
    /// default role when its alias is gone.
    #[test]
    fn a_grant_gets_its_alias_and_never_the_default() {
        let roles = roles();
        let web = grant_assignment(&roles, "batch", "web").unwrap();
        assert_eq!(web.role.arn.name(), "Web");
        assert_eq!(&*web.session_name, "batch");
        assert!(web.policy.is_some(), "the default policy applies");
        assert_eq!(
            grant_assignment(&roles, "batch", "gone").unwrap_err(),
            RoleError::UnknownGrantAlias("batch".into(), "gone".into())
        );
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

    #[tokio::test]
    async fn label_selects_alias_and_no_label_selects_default() {
        let roles = roles();
        let web = pick(&roles, &container(&[(ROLE_ALIAS_LABEL, "web")]))
            .await
            .unwrap();
        assert_eq!(web.role.arn.name(), "Web");
        assert_eq!(&*web.session_name, "app-0123456789ab");
        let default = pick(&roles, &container(&[])).await.unwrap();
        assert_eq!(default.role.alias, "default");
    }

    #[tokio::test]
    async fn unknown_alias_fails_closed_instead_of_using_the_default() {
        let error = pick(&roles(), &container(&[(ROLE_ALIAS_LABEL, "nope")]))
            .await
            .unwrap_err();
        assert_eq!(error, RoleError::UnknownAlias("nope".into()));
        assert_eq!(
            error.to_string(),
            "label ec2metaproxy.RoleAlias=\"nope\" names no alias in aliasToARN"
        );
        // The same from roleMappingFile names the file, not a label.
        let mapped = crate::platform::mapping::parse(r#"{"10.0.0.5": "nope"}"#, "m.json").unwrap();
        let stand_in = &mapped[&"10.0.0.5".parse().unwrap()];
        let error = pick(&roles(), stand_in).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "roleMappingFile maps this address to \"nope\", which names no alias in aliasToARN"
        );
    }

    #[tokio::test]
    async fn policy_label_overrides_the_alias_and_default_policies() {
        let roles = roles();
        let labelled = pick(
            &roles,
            &container(&[(POLICY_LABEL, r#"{"Statement": []}"#)]),
        )
        .await
        .unwrap();
        assert_eq!(labelled.policy.as_deref(), Some(r#"{"Statement":[]}"#));
        let unlabelled = pick(&roles, &container(&[])).await.unwrap();
        assert_eq!(
            unlabelled.policy.as_deref(),
            Some(r#"{"Version":"2012-10-17"}"#)
        );
        let bad = pick(&roles, &container(&[(POLICY_LABEL, "allow all")])).await;
        assert!(matches!(bad, Err(RoleError::BadPolicy(_))));
    }

    fn env_roles(extra: &str) -> RoleMap {
        Config::parse(
            &format!(
                r#"{{"aliasToARN": {{"default": "arn:aws:iam::123456789012:role/Default",
                    "partner": {{"arn": "arn:aws:iam::210987654321:role/Partner", "externalId": "from-config",
                                 "policy": {{"Version": "alias"}}}}}},
                    "defaultAlias": "default", "roleEnv": "IAM_ROLE" {extra}}}"#
            ),
            "t",
        )
        .unwrap()
        .roles()
    }

    #[tokio::test]
    async fn environment_names_an_alias_when_no_label_does() {
        let roles = env_roles("");
        let c = with_env(container(&[]), &[("IAM_ROLE", "partner")]);
        let chosen = pick(&roles, &c).await.unwrap();
        assert_eq!(chosen.role.arn.name(), "Partner");
        assert_eq!(chosen.external_id.as_deref(), Some("from-config"));
        assert_eq!(chosen.policy.as_deref(), Some(r#"{"Version":"alias"}"#));
        // The label still wins.
        let labelled = with_env(
            container(&[(ROLE_ALIAS_LABEL, "default")]),
            &[("IAM_ROLE", "partner")],
        );
        assert_eq!(pick(&roles, &labelled).await.unwrap().role.alias, "default");
    }

    #[tokio::test]
    async fn a_container_cannot_replace_the_operators_external_id() {
        let roles =
            env_roles(r#", "allowUnmappedRoles": true, "defaultAccountId": "555555555555""#);
        let both = with_env(
            container(&[]),
            &[("IAM_ROLE", "partner"), ("IAM_EXTERNAL_ID", "from-env")],
        );
        assert_eq!(
            pick(&roles, &both).await.unwrap().external_id.as_deref(),
            Some("from-config")
        );
        let unmapped = with_env(
            container(&[]),
            &[("IAM_ROLE", "Other"), ("IAM_EXTERNAL_ID", "from-env")],
        );
        assert_eq!(
            pick(&roles, &unmapped)
                .await
                .unwrap()
                .external_id
                .as_deref(),
            Some("from-env")
        );
        let labelled = with_env(
            container(&[(ROLE_ALIAS_LABEL, "default")]),
            &[("IAM_EXTERNAL_ID", "from-env")],
        );
        assert_eq!(
            pick(&roles, &labelled).await.unwrap().external_id,
            None,
            "a label chose the role"
        );
    }

    #[tokio::test]
    async fn unmapped_environment_roles_are_refused_unless_allowed() {
        let c = with_env(container(&[]), &[("IAM_ROLE", "SomeRole@123456789012")]);
        let error = pick(&env_roles(""), &c).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment IAM_ROLE=\"SomeRole@123456789012\" names no alias in aliasToARN (and allowUnmappedRoles is off)"
        );
    }

    #[tokio::test]
    async fn every_unmapped_role_format_resolves() {
        let roles = env_roles(
            r#", "allowUnmappedRoles": true, "accountMap": {"prod": "444444444444"}, "defaultAccountId": "555555555555""#,
        );
        for (value, arn) in [
            (
                "arn:aws:iam::666666666666:role/Full",
                "arn:aws:iam::666666666666:role/Full",
            ),
            ("Named@777777777777", "arn:aws:iam::777777777777:role/Named"),
            ("Named@prod", "arn:aws:iam::444444444444:role/Named"),
            ("Bare", "arn:aws:iam::555555555555:role/Bare"),
        ] {
            let c = with_env(container(&[]), &[("IAM_ROLE", value)]);
            assert_eq!(
                pick(&roles, &c).await.unwrap().role.arn.as_str(),
                arn,
                "{value}"
            );
        }
        let c = with_env(container(&[]), &[("IAM_ROLE", "Named@staging")]);
        assert!(matches!(
            pick(&roles, &c).await,
            Err(RoleError::BadEnvRole(..))
        ));
    }

    #[tokio::test]
    async fn a_bare_name_without_a_default_account_is_looked_up_with_get_role() {
        let roles = env_roles(r#", "allowUnmappedRoles": true"#);
        let iam = FakeIam::default();
        let c = with_env(
            container(&[]),
            &[("IAM_ROLE", "Known"), ("IAM_EXTERNAL_ID", "from-env")],
        );
        let chosen = assign(&roles, &c, &iam).await.unwrap();
        assert_eq!(
            chosen.role.arn.as_str(),
            "arn:aws:iam::333333333333:role/path/Known"
        );
        assert_eq!(chosen.external_id.as_deref(), Some("from-env"));
        assert_eq!(*iam.calls.lock().unwrap(), vec!["Known".to_string()]);
        let missing = with_env(container(&[]), &[("IAM_ROLE", "Missing")]);
        let error = assign(&roles, &missing, &iam).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment IAM_ROLE=\"Missing\" is not a role: IAM GetRole Missing: NoSuchEntity: not found"
        );
    }

    #[tokio::test]
    async fn session_names_can_come_from_a_label_or_the_environment() {
        let from_label = Config::parse(
            r#"{"aliasToARN": {"d": "arn:aws:iam::123456789012:role/D"}, "defaultAlias": "d",
                "roleSessionKey": "Labels:com.example.user"}"#,
            "t",
        )
        .unwrap()
        .roles();
        let c = container(&[("com.example.user", "alice@example.com")]);
        assert_eq!(
            &*pick(&from_label, &c).await.unwrap().session_name,
            "alice@example.com"
        );
        let c = container(&[]);
        assert_eq!(
            &*pick(&from_label, &c).await.unwrap().session_name,
            "app-0123456789ab",
            "fallback"
        );
        let from_env = Config::parse(
            r#"{"aliasToARN": {"d": "arn:aws:iam::123456789012:role/D"}, "defaultAlias": "d",
                "roleSessionKey": "Env:JOB_ID"}"#,
            "t",
        )
        .unwrap()
        .roles();
        let c = with_env(container(&[]), &[("JOB_ID", "build 42/x")]);
        assert_eq!(
            &*pick(&from_env, &c).await.unwrap().session_name,
            "build-42-x"
        );
    }

    #[tokio::test]
    async fn tags_source_identity_and_session_name_come_from_the_container() {
        let roles = Config::parse(
            r#"{"aliasToARN": {"d": "arn:aws:iam::123456789012:role/D",
                               "ci": {"arn": "arn:aws:iam::123456789012:role/CI",
                                      "roleSessionName": "ci-{shortId}"}},
                "defaultAlias": "d", "roleSessionKey": "Labels:user",
                "sessionTags": {"project": "{composeProject}", "service": "{composeService}",
                                "container": "{name}", "alias": "{alias}"},
                "transitiveTagKeys": ["project"],
                "sourceIdentity": "{composeService}"}"#,
            "t",
        )
        .unwrap()
        .roles();
        let compose = container(&[
            ("com.docker.compose.project", "shop"),
            ("com.docker.compose.service", "api"),
        ]);
        let chosen = pick(&roles, &compose).await.unwrap();
        let tags: Vec<(&str, &str)> = chosen.tags.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            tags,
            [
                ("alias", "d"),
                ("container", "app"),
                ("project", "shop"),
                ("service", "api")
            ]
        );
        assert_eq!(&*chosen.transitive_tag_keys, [Arc::from("project")]);
        assert_eq!(chosen.source_identity.as_deref(), Some("api"));
        assert_eq!(&*chosen.session_name, "app-0123456789ab");

        // Unlabelled: no Compose tags, no transitive key, no SourceIdentity.
        let plain = pick(&roles, &container(&[("user", "bob")])).await.unwrap();
        let keys: Vec<&str> = plain.tags.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["alias", "container"]);
        assert!(plain.transitive_tag_keys.is_empty());
        assert_eq!(plain.source_identity, None);
        assert_eq!(&*plain.session_name, "bob", "roleSessionKey still applies");

        // The alias's roleSessionName wins over roleSessionKey.
        let ci = pick(
            &roles,
            &container(&[(ROLE_ALIAS_LABEL, "ci"), ("user", "bob")]),
        )
        .await
        .unwrap();
        assert_eq!(&*ci.session_name, "ci-0123456789ab");
        assert_eq!(
            container_session(&roles, &container(&[(ROLE_ALIAS_LABEL, "ci")]), &ci.role),
            ci.session_name,
            "a container that is gone is forgotten under the same name"
        );
    }

    #[tokio::test]
    async fn without_tagging_keys_nothing_is_sent() {
        let chosen = pick(&roles(), &container(&[])).await.unwrap();
        assert!(chosen.tags.is_empty() && chosen.transitive_tag_keys.is_empty());
        assert_eq!(chosen.source_identity, None);
    }
}
