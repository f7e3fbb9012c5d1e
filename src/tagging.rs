//! What CloudTrail and IAM policies see of a container: session tags,
//! SourceIdentity and the role session name, as templates over a fixed set
//! of sources (the container's name, ID, image, Compose and Swarm labels,
//! the host, the alias), rendered per container and cleaned to STS's rules.

use std::fmt;
use std::sync::Arc;

use crate::container::Container;

/// STS's limits (AssumeRole API reference, "Tag" and "SourceIdentity").
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;
pub const MAX_SOURCE_IDENTITY: usize = 64;
pub const MAX_SESSION_NAME: usize = 64;
/// STS refuses SourceIdentity and session names shorter than this.
pub const MIN_IDENTITY: usize = 2;

pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";
pub const SWARM_SERVICE_LABEL: &str = "com.docker.swarm.service.name";

/// A session tag as sent: key and cleaned value.
pub type Tag = (Arc<str>, Arc<str>);

/// A value a template can name, as `{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Name,
    ShortId,
    Image,
    ComposeProject,
    ComposeService,
    SwarmService,
    InstanceId,
    Hostname,
    Alias,
}

impl Source {
    const ALL: [(&'static str, Source); 9] = [
        ("name", Source::Name),
        ("shortId", Source::ShortId),
        ("image", Source::Image),
        ("composeProject", Source::ComposeProject),
        ("composeService", Source::ComposeService),
        ("swarmService", Source::SwarmService),
        ("instanceId", Source::InstanceId),
        ("hostname", Source::Hostname),
        ("alias", Source::Alias),
    ];

    fn parse(name: &str) -> Option<Source> {
        Source::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, source)| *source)
    }

    fn names() -> String {
        Source::ALL
            .iter()
            .map(|(name, _)| format!("{{{name}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Source),
}

/// Text with `{source}` placeholders; text alone is a static value.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("\"{text}\" has a \"{{\" without its \"}}\""));
            };
            let name = &rest[open + 1..open + close];
            let source = Source::parse(name).ok_or_else(|| {
                format!(
                    "\"{text}\": {{{name}}} is not a source (known: {})",
                    Source::names()
                )
            })?;
            parts.push(Part::Value(source));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("\"{text}\" has a \"}}\" without its \"{{\""));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template {
            text: text.to_string(),
            parts,
        })
    }

    /// The template's fixed text, which every rendering holds.
    fn fixed(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Text(text) => Some(text.as_str()),
            Part::Value(_) => None,
        })
    }

    fn names(&self, source: Source) -> bool {
        self.parts.contains(&Part::Value(source))
    }

    fn has_sources(&self) -> bool {
        self.parts.iter().any(|part| matches!(part, Part::Value(_)))
    }

    /// Refuses a template whose fixed text alone breaks STS's rules for a
    /// value of at most `max` characters of `allowed`: every rendering would
    /// be cut or changed. `min` applies to a template without sources.
    pub fn check(&self, min: usize, max: usize, allowed: fn(char) -> bool) -> Result<(), String> {
        let fixed: String = self.fixed().collect();
        if let Some(bad) = fixed.chars().find(|c| !allowed(*c)) {
            return Err(format!(
                "\"{}\": {bad:?} is not allowed here by STS",
                self.text
            ));
        }
        let length = fixed.chars().count();
        if length > max {
            return Err(format!(
                "\"{}\": its fixed text alone is {length} characters, over STS's {max}",
                self.text
            ));
        }
        if !self.has_sources() && length < min {
            return Err(format!(
                "\"{}\" is shorter than STS's {min} characters",
                self.text
            ));
        }
        Ok(())
    }

    pub fn render(&self, facts: &Facts<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(source) => out.push_str(facts.value(*source)),
            }
        }
        out
    }
}

/// What the host knows of itself, for `{hostname}` and `{instanceId}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub hostname: String,
    pub instance_id: String,
}

/// The instance ID the metadata service gave at start (see [`set_instance_id`]).
static UPSTREAM_INSTANCE_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records the host's instance ID, read once from the metadata service at
/// start: it does not change while the process lives.
pub fn set_instance_id(id: String) {
    let _ = UPSTREAM_INSTANCE_ID.set(id);
}

impl HostFacts {
    /// The kernel's host name, and the instance ID: `local` (localMetadata's)
    /// when given, else the metadata service's when it was read.
    pub fn local(local: Option<&str>) -> HostFacts {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_default();
        let instance_id = local
            .or(UPSTREAM_INSTANCE_ID.get().map(String::as_str))
            .unwrap_or_default();
        HostFacts {
            hostname,
            instance_id: instance_id.to_string(),
        }
    }
}

/// The values a template is rendered with, for one container.
pub struct Facts<'a> {
    pub container: &'a Container,
    pub alias: &'a str,
    pub host: &'a HostFacts,
}

impl Facts<'_> {
    fn value(&self, source: Source) -> &str {
        let label = |name: &str| self.container.labels.get(name).map_or("", String::as_str);
        match source {
            Source::Name => &self.container.name,
            Source::ShortId => self.container.short_id(),
            Source::Image => &self.container.image,
            Source::ComposeProject => label(COMPOSE_PROJECT_LABEL),
            Source::ComposeService => label(COMPOSE_SERVICE_LABEL),
            Source::SwarmService => label(SWARM_SERVICE_LABEL),
            Source::InstanceId => &self.host.instance_id,
            Source::Hostname => &self.host.hostname,
            Source::Alias => self.alias,
        }
    }
}

/// A tag key or value character STS accepts: `[\p{L}\p{Z}\p{N}_.:/=+\-@]`.
pub fn tag_char(c: char) -> bool {
    c.is_alphabetic() || c.is_numeric() || is_separator(c) || "_.:/=+-@".contains(c)
}

/// Unicode category Z (space, line and paragraph separators).
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// A SourceIdentity or session name character: `[\w+=,.@-]`, ASCII.
pub fn identity_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

/// `text` with each character `allowed` refuses replaced by `-`, cut to
/// `max` characters.
pub fn clean(text: &str, max: usize, allowed: fn(char) -> bool) -> String {
    text.chars()
        .map(|c| if allowed(c) { c } else { '-' })
        .take(max)
        .collect()
}

/// A tag key STS accepts as it is: keys are the operator's, so one that
/// would need cleaning is refused instead.
pub fn check_tag_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.chars().count() > MAX_TAG_KEY {
        return Err(format!(
            "tag key \"{key}\" must be 1 to {MAX_TAG_KEY} characters"
        ));
    }
    if let Some(bad) = key.chars().find(|c| !tag_char(*c)) {
        return Err(format!("tag key \"{key}\": {bad:?} is not allowed by STS"));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(format!("tag key \"{key}\": the aws: prefix is AWS's own"));
    }
    Ok(())
}

/// Empty lists, shared: untagged requests (the default) allocate nothing
/// for their tags.
trait Empty: Sized + 'static {
    fn shared() -> &'static std::sync::OnceLock<Arc<[Self]>>;
}

impl Empty for Tag {
    fn shared() -> &'static std::sync::OnceLock<Arc<[Self]>> {
        static EMPTY: std::sync::OnceLock<Arc<[Tag]>> = std::sync::OnceLock::new();
        &EMPTY
    }
}

impl Empty for Arc<str> {
    fn shared() -> &'static std::sync::OnceLock<Arc<[Self]>> {
        static EMPTY: std::sync::OnceLock<Arc<[Arc<str>]>> = std::sync::OnceLock::new();
        &EMPTY
    }
}

fn none<T: Empty>() -> Arc<[T]> {
    T::shared().get_or_init(|| Arc::from(Vec::new())).clone()
}

/// What AssumeRole is told about a container: the config's `sessionTags`,
/// `transitiveTagKeys`, `sourceIdentity` and `roleSessionName`, globally
/// or for one alias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tagging {
    pub tags: Option<Vec<(Arc<str>, Template)>>,
    pub transitive: Option<Vec<Arc<str>>>,
    pub source_identity: Option<Template>,
    pub session_name: Option<Template>,
}

impl Tagging {
    /// `self` (an alias's own settings) over `global`, key by key.
    pub fn over(&self, global: &Tagging) -> Tagging {
        Tagging {
            tags: self.tags.clone().or_else(|| global.tags.clone()),
            transitive: self
                .transitive
                .clone()
                .or_else(|| global.transitive.clone()),
            source_identity: self
                .source_identity
                .clone()
                .or_else(|| global.source_identity.clone()),
            session_name: self
                .session_name
                .clone()
                .or_else(|| global.session_name.clone()),
        }
    }

    /// Whether any template here names `{instanceId}`.
    pub fn names_instance_id(&self) -> bool {
        self.tags
            .iter()
            .flatten()
            .map(|(_, template)| template)
            .chain(&self.source_identity)
            .chain(&self.session_name)
            .any(|template| template.names(Source::InstanceId))
    }

    /// The tags, cleaned; a tag whose value renders empty is left out
    /// (an unlabelled container has no Compose service to tell).
    pub fn render_tags(&self, facts: &Facts<'_>) -> Arc<[(Arc<str>, Arc<str>)]> {
        let Some(tags) = self.tags.as_ref().filter(|tags| !tags.is_empty()) else {
            return none();
        };
        tags.iter()
            .filter_map(|(key, template)| {
                let value = clean(&template.render(facts), MAX_TAG_VALUE, tag_char);
                (!value.is_empty()).then(|| (key.clone(), Arc::from(value)))
            })
            .take(MAX_TAGS)
            .collect()
    }

    /// The transitive keys among the tags actually sent (STS refuses one
    /// that names no tag of the call).
    pub fn render_transitive(&self, tags: &[(Arc<str>, Arc<str>)]) -> Arc<[Arc<str>]> {
        let Some(keys) = self.transitive.as_ref().filter(|keys| !keys.is_empty()) else {
            return none();
        };
        keys.iter()
            .filter(|key| tags.iter().any(|(tag, _)| tag == *key))
            .cloned()
            .collect()
    }

    /// SourceIdentity, cleaned; `None` when it renders too short to send.
    pub fn render_source_identity(&self, facts: &Facts<'_>) -> Option<Arc<str>> {
        let template = self.source_identity.as_ref()?;
        let value = clean(&template.render(facts), MAX_SOURCE_IDENTITY, identity_char);
        (value.chars().count() >= MIN_IDENTITY).then(|| Arc::from(value))
    }

    /// The session name from the template, cleaned; `None` without one or
    /// when it renders too short (the default name is used then).
    pub fn render_session_name(&self, facts: &Facts<'_>) -> Option<Arc<str>> {
        let template = self.session_name.as_ref()?;
        let value = clean(&template.render(facts), MAX_SESSION_NAME, identity_char);
        (value.chars().count() >= MIN_IDENTITY).then(|| Arc::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::StringMap;
    use proptest::prelude::*;

    fn container(labels: &[(&str, &str)]) -> Container {
        Container::new(
            "0123456789abcdef0123".into(),
            "/web 1",
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<StringMap>(),
            vec![],
        )
        .with_image("registry.example/app:1.2".into())
    }

    fn host() -> HostFacts {
        HostFacts {
            hostname: "build-7".into(),
            instance_id: "i-0abc".into(),
        }
    }

    #[test]
    fn templates_render_every_source() {
        let c = container(&[
            (COMPOSE_PROJECT_LABEL, "shop"),
            (COMPOSE_SERVICE_LABEL, "api"),
            (SWARM_SERVICE_LABEL, "shop_api"),
        ]);
        let host = host();
        let facts = Facts {
            container: &c,
            alias: "web",
            host: &host,
        };
        let template = Template::parse(
            "{name}|{shortId}|{image}|{composeProject}|{composeService}|{swarmService}|{instanceId}|{hostname}|{alias}",
        )
        .unwrap();
        assert_eq!(
            template.render(&facts),
            "web 1|0123456789ab|registry.example/app:1.2|shop|api|shop_api|i-0abc|build-7|web"
        );
        assert_eq!(Template::parse("static").unwrap().render(&facts), "static");
    }

    #[test]
    fn templates_that_cannot_be_read_are_refused() {
        assert!(Template::parse("{nope}")
            .unwrap_err()
            .contains("{nope} is not a source"));
        assert!(Template::parse("{name").unwrap_err().contains("without"));
        assert!(Template::parse("name}").unwrap_err().contains("without"));
    }

    #[test]
    fn templates_that_can_never_fit_are_refused() {
        let long = Template::parse(&format!("{}{{name}}", "x".repeat(65))).unwrap();
        assert!(long
            .check(MIN_IDENTITY, MAX_SESSION_NAME, identity_char)
            .unwrap_err()
            .contains("over STS's 64"));
        let bad = Template::parse("team a/{name}").unwrap();
        assert!(bad
            .check(MIN_IDENTITY, MAX_SOURCE_IDENTITY, identity_char)
            .unwrap_err()
            .contains("' ' is not allowed"));
        assert!(Template::parse("x")
            .unwrap()
            .check(MIN_IDENTITY, MAX_SESSION_NAME, identity_char)
            .is_err());
        assert!(Template::parse("ci-{shortId}")
            .unwrap()
            .check(MIN_IDENTITY, MAX_SESSION_NAME, identity_char)
            .is_ok());
    }

    #[test]
    fn tag_keys_are_checked_not_cleaned() {
        assert!(check_tag_key("compose-service").is_ok());
        assert!(check_tag_key("aws:x").is_err());
        assert!(check_tag_key("a,b").is_err());
        assert!(check_tag_key("").is_err());
        assert!(check_tag_key(&"k".repeat(129)).is_err());
    }

    #[test]
    fn unlabelled_containers_send_no_empty_tags_and_the_alias_overrides_globally() {
        let global = Tagging {
            tags: Some(vec![
                (
                    Arc::from("service"),
                    Template::parse("{composeService}").unwrap(),
                ),
                (Arc::from("team"), Template::parse("payments").unwrap()),
            ]),
            transitive: Some(vec![Arc::from("service"), Arc::from("team")]),
            source_identity: Some(Template::parse("{name}").unwrap()),
            session_name: None,
        };
        let c = container(&[]);
        let host = host();
        let facts = Facts {
            container: &c,
            alias: "web",
            host: &host,
        };
        let tags = global.render_tags(&facts);
        assert_eq!(&*tags, [(Arc::from("team"), Arc::from("payments"))]);
        assert_eq!(&*global.render_transitive(&tags), [Arc::from("team")]);
        let off = Tagging::default();
        let (a, b) = (off.render_tags(&facts), off.render_tags(&facts));
        assert!(
            a.is_empty() && Arc::ptr_eq(&a, &b),
            "untagged: one shared empty list"
        );
        assert_eq!(
            global.render_source_identity(&facts).as_deref(),
            Some("web-1")
        );
        let alias = Tagging {
            session_name: Some(Template::parse("{alias}-{shortId}").unwrap()),
            ..Tagging::default()
        };
        let merged = alias.over(&global);
        assert_eq!(merged.tags, global.tags);
        assert_eq!(
            merged.render_session_name(&facts).as_deref(),
            Some("web-0123456789ab")
        );
    }

    proptest! {
        #[test]
        fn cleaned_tag_values_always_fit(text in "\\PC{0,400}") {
            let value = clean(&text, MAX_TAG_VALUE, tag_char);
            prop_assert!(value.chars().count() <= MAX_TAG_VALUE);
            prop_assert!(value.chars().all(tag_char));
            prop_assert_eq!(value.chars().count(), text.chars().count().min(MAX_TAG_VALUE));
        }

        #[test]
        fn cleaned_identities_always_fit(text in "\\PC{0,200}") {
            let value = clean(&text, MAX_SOURCE_IDENTITY, identity_char);
            prop_assert!(value.chars().count() <= MAX_SOURCE_IDENTITY);
            prop_assert!(value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b)));
        }

        #[test]
        fn allowed_text_is_kept_as_it_is(text in "[A-Za-z0-9_+=,.@-]{0,64}") {
            prop_assert_eq!(clean(&text, MAX_SESSION_NAME, identity_char), text.clone());
            prop_assert_eq!(clean(&text, MAX_TAG_VALUE, tag_char).len(), text.len());
        }
    }
}
