//! The file as serde reads it: every key, its JSON type, nothing more.
//!
//! serde refuses unknown keys and wrong types here, naming the key's path
//! (through `serde_path_to_error`); [`super::check`] does what a type
//! cannot say (ranges, ARNs, policies, addresses) and builds the validated
//! [`super::Config`]. A key left out, or `null`, takes its default (except
//! `metadataURL`, where `null` means "no metadata service").

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::imds::local::Overrides;

/// The whole file. The first six keys are the Go fork's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawConfig {
    #[serde(rename = "aliasToARN")]
    pub alias_to_arn: BTreeMap<String, RawAlias>,
    pub default_alias: String,
    /// A JSON object, or a string holding one (the Go fork's form).
    pub default_policy: Option<Value>,
    pub docker_host: Option<String>,
    /// One address (the Go fork's form) or a list, e.g. an IPv4 and an IPv6 one.
    pub listen: Option<RawListen>,
    pub verbose: Option<bool>,
    #[serde(rename = "metadataURL", default, deserialize_with = "nullable")]
    pub metadata_url: Option<Option<String>>,
    pub state_dir: Option<PathBuf>,
    pub session_duration: Option<u64>,
    pub require_token: Option<bool>,
    pub passthrough: Option<Vec<String>>,
    pub metrics_listen: Option<String>,
    pub log_format: Option<String>,
    #[serde(default, deserialize_with = "object")]
    pub local_metadata: Option<Overrides>,
    pub role_env: Option<String>,
    pub allow_unmapped_roles: Option<bool>,
    pub account_map: Option<BTreeMap<String, String>>,
    pub default_account_id: Option<String>,
    pub role_session_key: Option<String>,
    pub sts_region: Option<String>,
    pub role_mapping_file: Option<PathBuf>,
    pub require_caller_proof: Option<bool>,
    pub session_tags: Option<BTreeMap<String, String>>,
    pub transitive_tag_keys: Option<Vec<String>>,
    pub source_identity: Option<String>,
    pub role_session_name: Option<String>,
    #[serde(default, deserialize_with = "object")]
    pub container_credentials: Option<RawContainerCredentials>,
}

/// `containerCredentials`: the container credentials door (by token).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawContainerCredentials {
    /// `IP:PORT` listeners for `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Grant name -> its alias.
    #[serde(default)]
    pub grants: BTreeMap<String, RawGrant>,
    /// `IP:PORT` listeners that 169.254.170.2:80 is DNATed to, for
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`: callers by address.
    #[serde(default)]
    pub address_listen: Vec<String>,
}

/// One grant: `{"alias": "web"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawGrant {
    pub alias: String,
}

/// One entry of `aliasToARN`: a role ARN, or an object with one.
pub(super) enum RawAlias {
    Arn(String),
    Role(Box<RawRole>),
}

/// `{"arn": ..., "externalId": ..., "policy": ..., "durationSeconds": ...}`,
/// and the tagging keys, which override the global ones for this alias.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawRole {
    pub arn: String,
    pub external_id: Option<String>,
    pub policy: Option<Value>,
    pub duration_seconds: Option<u64>,
    pub session_tags: Option<BTreeMap<String, String>>,
    pub transitive_tag_keys: Option<Vec<String>>,
    pub source_identity: Option<String>,
    pub role_session_name: Option<String>,
}

/// Untagged by the JSON type. serde's `#[serde(untagged)]` would try each
/// form and, when none fits, say only "data did not match any variant",
/// losing the object form's own error (which key is unknown, which is
/// missing); choosing the form by the JSON type keeps it.
impl<'de> Deserialize<'de> for RawAlias {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawAlias, D::Error> {
        struct Alias;
        impl<'de> Visitor<'de> for Alias {
            type Value = RawAlias;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a role ARN string or an object with \"arn\"")
            }
            fn visit_str<E: de::Error>(self, arn: &str) -> Result<RawAlias, E> {
                Ok(RawAlias::Arn(arn.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawAlias, A::Error> {
                RawRole::deserialize(MapAccessDeserializer::new(map))
                    .map(|role| RawAlias::Role(Box::new(role)))
            }
        }
        deserializer.deserialize_any(Alias)
    }
}

/// `listen`: one address, as the Go fork writes it, or several.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a listen address such as \":18000\", or a list of them"
)]
pub(super) enum RawListen {
    One(String),
    Many(Vec<String>),
}

/// `null` kept apart from a key left out: `Some(None)`.
fn nullable<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// A derived struct only in its JSON object form: serde's derive also
/// accepts a list (the fields by position), which no key of this file means.
fn object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Object<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(Some)
        }
    }
    deserializer.deserialize_any(Object(PhantomData))
}

/// Every key of the file, in the schema's order.
pub fn known_keys() -> &'static [&'static str] {
    field_names::<RawConfig>()
}

/// The keys of a derived struct, as serde's derive declares them (it hands
/// them to `deserialize_struct`), so that no list is kept by hand.
pub(super) fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Fields<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only the field names were asked for"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// serde's error in this file's words: the key with its path
/// (`aliasToARN.web.durationSeconds`) and the problem. serde_path_to_error
/// gives the path; the problem is read from the text of serde's default
/// `de::Error` constructors (`unknown_field`, `missing_field`,
/// `invalid_type`, `invalid_value`), which config tests pin; what was found
/// is read from `document`, the parsed file. Anything else is kept as
/// serde says it.
pub(super) fn serde_problem(
    error: &serde_path_to_error::Error<serde_json::Error>,
    document: &Value,
) -> (String, String) {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = error.path().iter().collect();
    let key = match segments.as_slice() {
        [] => String::new(),
        _ => error.path().to_string(),
    };
    let message = error.inner().to_string();
    if let Some(Segment::Map { key: unknown }) = segments.last() {
        // "unknown field `x`, expected one of `a`, `b`": the path ends with
        // the unknown key; the names after it are its object's keys.
        if let Some(rest) = message.strip_prefix(&format!("unknown field `{unknown}`")) {
            let problem = if segments.len() > 1 {
                let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
                format!("unknown key (known: {})", known.join(", "))
            } else {
                match known_keys()
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(unknown))
                {
                    Some(known) => format!("unknown key (did you mean \"{known}\"?)"),
                    None => "unknown key".to_string(),
                }
            };
            return (key, problem);
        }
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let key = match key.as_str() {
            "" => field.to_string(),
            parent => format!("{parent}.{field}"),
        };
        return (key, "is required".to_string());
    }
    // "invalid type: string \"yes\", expected a boolean": say the kind found;
    // "invalid value: integer `-5`, expected u64": say the value found.
    for (prefix, show_value) in [("invalid type: ", false), ("invalid value: ", true)] {
        let Some((unexpected, expected)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.rsplit_once(", expected "))
        else {
            continue;
        };
        let value = segments
            .iter()
            .try_fold(document, |value, segment| match segment {
                Segment::Map { key } => value.get(key.as_str()),
                Segment::Seq { index } => value.get(*index),
                _ => None,
            });
        let found = match value {
            Some(value) if show_value => value.to_string(),
            Some(value) => crate::container::json_kind(value).to_string(),
            None => unexpected.to_string(),
        };
        let expected = match expected {
            "a boolean" => "true or false",
            "a sequence" => "a list",
            "a map" => "an object",
            "path string" => "a string",
            "u64" => "a whole number",
            other => other,
        };
        return (key, format!("expected {expected}, found {found}"));
    }
    (key, message)
}
