//! One canonical form of a request path, and the route it names.
//!
//! The path is decoded and normalised exactly once, here, and every decision
//! (and the path forwarded upstream) uses that form. Peers leaked the host's
//! credentials through spellings they did not normalise (`//`, trailing
//! slashes, trailing junk); so spellings that could mean two things are
//! refused, and the identity routes are matched case-insensitively.
//!
//! "Could mean two things" includes what a server behind us might do with
//! the forwarded path: decode it a second time (`%252e%252e`), trim
//! whitespace (`..%20`), fold Unicode lookalikes (`%EF%BC%8E%EF%BC%8E`,
//! fullwidth dots) or read `...` as a parent. A decoded segment may hold only
//! letters, digits and `-._~!$&'()*+,=:@`, so what is classified is exactly
//! what is forwarded.

use std::borrow::Cow;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Longest path considered; IMDS paths are short.
pub const MAX_PATH_LEN: usize = 1024;

/// Why a path is refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path does not start with /")]
    NotAbsolute,
    #[error("path has a malformed percent-escape")]
    BadEscape,
    #[error("path decodes to invalid UTF-8")]
    BadUtf8,
    #[error(
        "path has an encoded or literal character that could split it (/, \\, ;, NUL or a control), or a segment of three or more dots"
    )]
    Ambiguous,
    /// A `%25` escape: a second decoding (by a server behind us) would read
    /// another path than the one classified here.
    #[error("path is percent-encoded twice (it decodes to a %)")]
    DoubleEncoded,
    /// Whitespace, non-ASCII (lookalikes of `/` and `.`), quotes, brackets
    /// and the like: no metadata path has them, and servers differ on them.
    #[error(
        "path has a character no metadata path has (allowed: letters, digits and -._~!$&'()*+,=:@)"
    )]
    BadCharacter,
}

/// The API version a request names: `latest` or a dated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Latest,
    Dated(String),
}

impl Version {
    fn parse(segment: &str) -> Option<Version> {
        if segment == "latest" {
            return Some(Version::Latest);
        }
        let b = segment.as_bytes();
        let dated = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        dated.then(|| Version::Dated(segment.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Version::Latest => "latest",
            Version::Dated(date) => date,
        }
    }
}

/// A decoded, normalised path: API version, segments, and whether it ended
/// in `/`. Segments borrow from the request where nothing was decoded, as in
/// every SDK's spelling: the hot path allocates only the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a> {
    pub segments: Vec<Cow<'a, str>>,
    pub trailing_slash: bool,
}

impl CanonicalPath<'_> {
    /// The form sent upstream: each segment re-encoded, `;` parameters and
    /// the query dropped.
    pub fn to_uri_path(&self) -> String {
        let mut out = String::with_capacity(64);
        for segment in &self.segments {
            out.push('/');
            out.extend(utf8_percent_encode(segment.as_ref(), SEGMENT));
        }
        if self.trailing_slash || self.segments.is_empty() {
            out.push('/');
        }
        out
    }
}

/// Characters escaped when a segment is written back into a path.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b';')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Decodes and normalises `raw` (the path of the request target, without query).
pub fn canonicalize(raw: &str) -> Result<CanonicalPath<'_>, PathError> {
    canonical_as_is(raw).map_or_else(|| canonicalize_slowly(raw), Ok)
}

/// The common case: a path already in canonical form, with nothing to
/// decode, drop or resolve (no `%`, `;` or dot segments; only segment
/// characters between the slashes). `None` for anything else, which
/// [`canonicalize_slowly`] handles; both give the same result
/// (`fast_path_agrees_with_the_slow_path` below).
fn canonical_as_is(raw: &str) -> Option<CanonicalPath<'_>> {
    let rest = raw.strip_prefix('/')?;
    if raw.len() > MAX_PATH_LEN {
        return None;
    }
    // Room for the credential routes' five segments and a few more.
    let mut segments = Vec::with_capacity(8);
    let mut trailing_slash = false;
    // One pass over the bytes: `split('/')` costs more than the checks.
    let bytes = rest.as_bytes();
    let mut start = 0;
    for end in 0..=bytes.len() {
        if let Some(&b) = bytes.get(end).filter(|&&b| b != b'/') {
            if !is_segment_byte(b) {
                return None;
            }
            continue;
        }
        let segment = &rest[start..end];
        start = end + 1;
        if segment.is_empty() {
            trailing_slash = true;
        } else if segment.bytes().all(|b| b == b'.') {
            return None;
        } else {
            segments.push(Cow::Borrowed(segment));
            trailing_slash = false;
        }
    }
    Some(CanonicalPath {
        segments,
        trailing_slash,
    })
}

/// [`canonicalize`] for any spelling.
fn canonicalize_slowly(raw: &str) -> Result<CanonicalPath<'_>, PathError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    let mut segments: Vec<Cow<'_, str>> = Vec::new();
    let mut trailing_slash = false;
    for raw_segment in rest.split('/') {
        // Matrix parameters (`name;x=y`) are dropped, as servers that honour them do.
        let raw_segment = raw_segment.split(';').next().unwrap_or_default();
        let decoded = decode(raw_segment)?;
        match &*decoded {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                segments.push(decoded);
                trailing_slash = false;
            }
        }
    }
    Ok(CanonicalPath {
        segments,
        trailing_slash,
    })
}

fn decode(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(PathError::BadEscape);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::BadUtf8)?;
    if decoded
        .chars()
        .any(|c| matches!(c, '/' | '\\' | ';') || c.is_control())
    {
        return Err(PathError::Ambiguous);
    }
    if decoded.contains('%') {
        return Err(PathError::DoubleEncoded);
    }
    if !decoded.bytes().all(is_segment_byte) {
        return Err(PathError::BadCharacter);
    }
    // `...` is a parent of a parent to some servers, a name to others.
    if decoded.len() > 2 && decoded.bytes().all(|b| b == b'.') {
        return Err(PathError::Ambiguous);
    }
    Ok(decoded)
}

/// What a decoded segment may hold: RFC 3986's `pchar` without `%` and `;`.
/// IMDS paths (categories, MAC addresses, tag keys, role names) need only
/// letters, digits and `-._:@+=,`; the rest of `pchar` does no harm. Every
/// byte here is also left as it is by [`CanonicalPath::to_uri_path`], so the
/// path forwarded upstream is the path classified.
fn is_segment_byte(b: u8) -> bool {
    SEGMENT_BYTES[usize::from(b)]
}

/// [`is_segment_byte`] as a table: it is asked of every byte of every path.
const SEGMENT_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,=:@";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// Which kind of credential route, legacy or extended (with `AccountId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Legacy,
    Extended,
}

/// What a canonical path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `api/token`
    Token { version: Version },
    /// Not an IMDS API path at all.
    NotFound,
    /// A route answered only to a caller that is a known container.
    Container(ContainerRoute<'a>),
}

/// The routes answered only to a known container, passthrough included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerRoute<'a> {
    /// `meta-data/iam/`
    IamIndex,
    /// `meta-data/iam/info`
    IamInfo,
    /// `meta-data/iam/security-credentials[-extended]/`
    RoleListing(Flavor),
    /// `meta-data/iam/security-credentials[-extended]/NAME`
    RoleCredentials(Flavor, &'a str),
    /// Allowed by the passthrough list: forward this path upstream.
    Passthrough(String),
    /// Host identity, or not on the passthrough list: 404.
    Denied(&'static str),
}

/// Prefixes (lowercased segments after the version) that hold the host's
/// identity or secrets. Checked before the passthrough list, whatever it says.
const IDENTITY: &[&[&str]] = &[
    &["meta-data", "iam"],
    &["meta-data", "identity-credentials"],
    &["dynamic", "instance-identity", "pkcs7"],
    &["dynamic", "instance-identity", "signature"],
    &["dynamic", "instance-identity", "rsa2048"],
    &["dynamic", "instance-identity", "rsa"],
    &["dynamic", "fws"],
];

/// True when `prefix` (as configured, `a/b`) may be passed through at all.
pub fn names_identity(prefix: &str) -> bool {
    let segments: Vec<String> = prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    IDENTITY.iter().any(|identity| {
        let n = identity.len().min(segments.len());
        identity[..n]
            .iter()
            .zip(&segments[..n])
            .all(|(a, b)| a == b)
    })
}

fn starts_with_lower(segments: &[Cow<'_, str>], prefix: &[&str]) -> bool {
    segments.len() >= prefix.len()
        && segments
            .iter()
            .zip(prefix)
            .all(|(s, p)| s.eq_ignore_ascii_case(p))
}

/// `segments` are `prefix`'s `/`-separated segments and maybe more, exactly.
fn starts_with_exactly(segments: &[Cow<'_, str>], prefix: &str) -> bool {
    let mut segments = segments.iter();
    prefix
        .split('/')
        .all(|p| segments.next().is_some_and(|s| s == p))
}

/// Classifies a canonical path. `passthrough` holds allowed prefixes such as
/// `meta-data/instance-id`, matched segment by segment and case-sensitively.
pub fn classify<'a>(path: &'a CanonicalPath<'_>, passthrough: &[String]) -> Route<'a> {
    let Some((first, rest)) = path.segments.split_first() else {
        return Route::NotFound;
    };
    let Some(version) = Version::parse(first) else {
        return Route::NotFound;
    };
    let is = |route: &[&str]| rest.len() == route.len() && starts_with_lower(rest, route);
    const CREDENTIALS: [&str; 3] = ["meta-data", "iam", "security-credentials"];
    const EXTENDED: [&str; 3] = ["meta-data", "iam", "security-credentials-extended"];
    if is(&["api", "token"]) {
        return Route::Token { version };
    }
    if is(&["meta-data", "iam"]) {
        return Route::Container(ContainerRoute::IamIndex);
    }
    if is(&["meta-data", "iam", "info"]) {
        return Route::Container(ContainerRoute::IamInfo);
    }
    if is(&CREDENTIALS) {
        return Route::Container(ContainerRoute::RoleListing(Flavor::Legacy));
    }
    if is(&EXTENDED) {
        return Route::Container(ContainerRoute::RoleListing(Flavor::Extended));
    }
    // The role name keeps its case: it must match the role exactly.
    if let [_, _, _, name] = rest {
        if starts_with_lower(rest, &CREDENTIALS) {
            return Route::Container(ContainerRoute::RoleCredentials(Flavor::Legacy, name));
        }
        if starts_with_lower(rest, &EXTENDED) {
            return Route::Container(ContainerRoute::RoleCredentials(Flavor::Extended, name));
        }
    }
    if IDENTITY
        .iter()
        .any(|prefix| starts_with_lower(rest, prefix))
    {
        return Route::Container(ContainerRoute::Denied("host identity route"));
    }
    // Case-sensitive, like the passthrough list: `Meta-Data` is not forwarded.
    let directory_index = match rest {
        [] => true,
        [only] => only == "meta-data" || only == "dynamic",
        _ => false,
    };
    let allowed = directory_index
        || passthrough
            .iter()
            .any(|prefix| starts_with_exactly(rest, prefix));
    if allowed {
        Route::Container(ContainerRoute::Passthrough(path.to_uri_path()))
    } else {
        Route::Container(ContainerRoute::Denied("not on the passthrough list"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_PASSTHROUGH;

    fn route(raw: &'static str) -> Route<'static> {
        let allowed: Vec<String> = DEFAULT_PASSTHROUGH.iter().map(|s| s.to_string()).collect();
        // A route borrows its path; a test's few paths can live forever.
        classify(Box::leak(Box::new(canonicalize(raw).unwrap())), &allowed)
    }

    #[test]
    fn spellings_of_the_credential_routes() {
        use Flavor::*;
        for raw in [
            "/latest/meta-data/iam/security-credentials/",
            "/latest/meta-data/iam/security-credentials",
            "/2016-09-02/meta-data/iam/security-credentials/",
            "//latest//meta-data/./iam/security-credentials",
            "/latest/meta-data/x/../iam/security-credentials",
            "/latest/meta-data/iam/%73ecurity-credentials",
            "/latest;v=1/meta-data/iam/security-credentials;x",
            "/latest/Meta-Data/IAM/Security-Credentials/",
        ] {
            assert_eq!(
                route(raw),
                Route::Container(ContainerRoute::RoleListing(Legacy)),
                "{raw}"
            );
        }
        assert_eq!(
            route("/latest/meta-data/iam/security-credentials/Web/"),
            Route::Container(ContainerRoute::RoleCredentials(Legacy, "Web"))
        );
        assert_eq!(
            route("/latest/meta-data/iam/security-credentials-extended/Web"),
            Route::Container(ContainerRoute::RoleCredentials(Extended, "Web"))
        );
    }

    #[test]
    fn identity_routes_never_pass_through() {
        for raw in [
            "/latest/meta-data/iam/security-credentials/HostRole/extra",
            "/latest/meta-data/iam/anything",
            "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
            "/latest/meta-data/IDENTITY-CREDENTIALS/ec2/info",
            "/latest/meta-data/instance-id/../identity-credentials/ec2/info",
            "/latest/dynamic/instance-identity/pkcs7",
            "/latest/dynamic/instance-identity/Signature",
        ] {
            assert!(
                matches!(route(raw), Route::Container(ContainerRoute::Denied(_))),
                "{raw}: {:?}",
                route(raw)
            );
        }
    }

    #[test]
    fn passthrough_is_an_allowlist() {
        assert_eq!(
            route("/latest/meta-data/instance-id"),
            Route::Container(ContainerRoute::Passthrough(
                "/latest/meta-data/instance-id".into()
            ))
        );
        assert_eq!(
            route(
                "/latest/meta-data/placement/region?x=1"
                    .split('?')
                    .next()
                    .unwrap()
            ),
            Route::Container(ContainerRoute::Passthrough(
                "/latest/meta-data/placement/region".into()
            ))
        );
        assert_eq!(
            route("/latest/meta-data/"),
            Route::Container(ContainerRoute::Passthrough("/latest/meta-data/".into()))
        );
        assert!(
            matches!(
                route("/latest/user-data"),
                Route::Container(ContainerRoute::Denied(_))
            ),
            "user-data is off by default"
        );
        assert!(matches!(
            route("/latest/meta-data/Instance-Id"),
            Route::Container(ContainerRoute::Denied(_))
        ));
        // Found by the property test: the listings were matched
        // case-insensitively and forwarded in the caller's case.
        for raw in ["/latest/Meta-Data", "/latest/META-DATA/", "/latest/Dynamic"] {
            assert!(
                matches!(route(raw), Route::Container(ContainerRoute::Denied(_))),
                "{raw}"
            );
        }
        assert_eq!(
            route("/latest/dynamic"),
            Route::Container(ContainerRoute::Passthrough("/latest/dynamic".into()))
        );
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(route("/v1/meta-data/instance-id"), Route::NotFound);
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (raw, error) in [
            (
                "/latest/meta-data/iam%2Fsecurity-credentials",
                PathError::Ambiguous,
            ),
            (
                "/latest/meta-data/iam%5csecurity-credentials",
                PathError::Ambiguous,
            ),
            ("/latest/meta-data/iam%00", PathError::Ambiguous),
            ("/latest/meta-data/iam%3b", PathError::Ambiguous),
            ("/latest/meta-data/%C0%AF", PathError::BadUtf8),
            ("/latest/meta-data/%zz", PathError::BadEscape),
            ("/latest/meta-data/%4", PathError::BadEscape),
            ("latest/meta-data", PathError::NotAbsolute),
        ] {
            assert_eq!(canonicalize(raw), Err(error), "{raw}");
        }
        assert_eq!(canonicalize(&"/a".repeat(600)), Err(PathError::TooLong));
    }

    /// Found by tests/security.rs: after an allowed prefix these reached the
    /// metadata service, where a second decoding, whitespace trimming or
    /// Unicode folding would read `../iam/...`.
    #[test]
    fn spellings_a_server_behind_us_could_read_as_dot_segments_are_refused() {
        for (raw, error) in [
            (
                "/latest/meta-data/instance-id/%252e%252e/iam/info",
                PathError::DoubleEncoded,
            ),
            (
                "/latest/meta-data/placement/%25%32%65%25%32%65/iam/info",
                PathError::DoubleEncoded,
            ),
            (
                "/latest/meta-data/instance-id/%252e%252e%252fiam%252finfo",
                PathError::DoubleEncoded,
            ),
            (
                "/latest/meta-data/instance-id/%25",
                PathError::DoubleEncoded,
            ),
            (
                "/latest/meta-data/%2569am/security-credentials/HostRole",
                PathError::DoubleEncoded,
            ),
            (
                "/latest/meta-data/instance-id/..%20/iam/info",
                PathError::BadCharacter,
            ),
            (
                "/latest/meta-data/instance-id/%20../iam/info",
                PathError::BadCharacter,
            ),
            (
                "/latest/meta-data/instance-id/ ../iam/info",
                PathError::BadCharacter,
            ),
            (
                "/latest/meta-data/instance-id/..%3f/iam/info",
                PathError::BadCharacter,
            ),
            (
                "/latest/meta-data/instance-id/..%23/iam/info",
                PathError::BadCharacter,
            ),
            (
                "/latest/meta-data/instance-id/%EF%BC%8E%EF%BC%8E/iam/info",
                PathError::BadCharacter,
            ),
            (
                "/latest/meta-data/instance-id/..%EF%BC%8F..%EF%BC%8Fiam",
                PathError::BadCharacter,
            ),
            (
                "/latest/meta-data/instance-id/..%E2%88%95iam",
                PathError::BadCharacter,
            ),
            (
                "/latest/meta-data/instance-id/\u{2025}/iam/info",
                PathError::BadCharacter,
            ),
            ("/latest/meta-data/%D1%96am/info", PathError::BadCharacter),
            ("/latest/meta-data/iam%C2%A0/info", PathError::BadCharacter),
            ("/latest/meta-data/instance-id/%22", PathError::BadCharacter),
            ("/latest/meta-data/instance-id/{x}", PathError::BadCharacter),
            (
                "/latest/meta-data/instance-id/.../iam/info",
                PathError::Ambiguous,
            ),
            (
                "/latest/meta-data/instance-id/..%2e/iam/info",
                PathError::Ambiguous,
            ),
            ("/latest/meta-data/placement/....", PathError::Ambiguous),
        ] {
            assert_eq!(canonicalize(raw), Err(error), "{raw}");
        }
    }

    #[test]
    fn real_metadata_paths_keep_their_characters() {
        for raw in [
            "/latest/meta-data/network/interfaces/macs/0e:49:61:0f:c3:11/local-ipv4s",
            "/latest/meta-data/tags/instance/team-name_x+y=z,w@v.u",
            "/latest/meta-data/iam/security-credentials/role+=,.@-_",
            "/latest/meta-data/public-keys/0/openssh-key",
            "/latest/meta-data/placement/..a/..b",
            "/latest/meta-data/placement/~x!$&'()*",
        ] {
            let path = canonicalize(raw).unwrap();
            assert_eq!(path.to_uri_path(), raw, "{raw}");
        }
    }

    #[test]
    fn dot_segments_cannot_climb_above_the_root() {
        assert_eq!(
            canonicalize("/../../latest/meta-data/instance-id")
                .unwrap()
                .to_uri_path(),
            "/latest/meta-data/instance-id"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Paths built from the pieces that matter to either path.
        #[test]
        fn fast_path_agrees_with_the_slow_path(
            raw in r"(/|\.|\.\.|%|%2[eEfF5]|;|[a-zA-Z0-9]|-|~|@|:|\\| |．|[\x00-\x7f]){0,24}"
        ) {
            proptest::prop_assert_eq!(canonicalize(&raw), canonicalize_slowly(&raw));
        }

        #[test]
        fn fast_path_agrees_with_the_slow_path_on_any_text(raw in r"/?\PC{0,40}") {
            proptest::prop_assert_eq!(canonicalize(&raw), canonicalize_slowly(&raw));
        }
    }

    #[test]
    fn the_segment_byte_table_is_the_documented_set() {
        for b in 0..=255u8 {
            assert_eq!(
                is_segment_byte(b),
                b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b),
                "{b:#x}"
            );
        }
    }

    #[test]
    fn fast_path_takes_the_common_spellings_and_leaves_the_rest() {
        for raw in [
            "/latest/meta-data/iam/security-credentials/BenchRole",
            "/latest/meta-data/iam/security-credentials/",
            "/",
            "//latest//meta-data",
            "/latest/meta-data/placement/..a",
        ] {
            assert_eq!(
                canonical_as_is(raw).map(Ok),
                Some(canonicalize_slowly(raw)),
                "{raw}"
            );
        }
        let too_long = "/a".repeat(600);
        for raw in [
            "/latest/meta-data/./iam",
            "/latest/meta-data/x/..",
            "/latest/meta-data/...",
            "/latest;v=1/meta-data",
            "/latest/%6deta-data",
            "/latest/meta data",
            "latest/meta-data",
            &too_long,
        ] {
            assert_eq!(canonical_as_is(raw), None, "{raw}");
        }
    }

    #[test]
    fn configured_prefixes_that_name_identity_are_detected() {
        assert!(names_identity("meta-data/iam"));
        assert!(
            names_identity("meta-data"),
            "a prefix that covers an identity route"
        );
        assert!(names_identity("Meta-Data/IAM/info"));
        assert!(names_identity("dynamic/instance-identity/pkcs7"));
        assert!(!names_identity("meta-data/instance-id"));
        assert!(!names_identity("dynamic/instance-identity/document"));
        assert!(!names_identity("user-data"));
    }
}
