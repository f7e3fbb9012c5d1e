//! IMDSv2 session tokens.
//!
//! A token is
//! `base64url(version || expiry || HMAC-SHA256(key, ip || container || expiry))`:
//! unforgeable without the key, bound to the caller's IP and to the container
//! that held the IP when it asked (so the next owner of a reused address
//! cannot use it), and checkable without any table. A token minted while no
//! container was known at the address (a container asking in its first
//! milliseconds, before the index has it) stays valid once one is: whoever
//! asked from that address then is, in practice, that container. Expiry is wall-clock seconds, and the key lives in a
//! state file, so tokens survive a restart of the proxy: aws-config caches a
//! token for hours and retries the same one on 401.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// IMDS's own bounds for `X-aws-ec2-metadata-token-ttl-seconds`.
pub const MIN_TTL_SECS: u64 = 1;
pub const MAX_TTL_SECS: u64 = 21_600;

/// 1 bound the IP only; its tokens are refused, and clients fetch new ones on 401.
const VERSION: u8 = 2;
const KEY_LEN: usize = 32;
const MAC_LEN: usize = 32;
const RAW_LEN: usize = 1 + 8 + MAC_LEN;
/// Base64 of `RAW_LEN` bytes, unpadded; anything longer is refused before decoding.
const TOKEN_LEN: usize = (RAW_LEN * 4).div_ceil(3);
const KEY_FILE: &str = "token.key";

/// The key tokens are signed with. Never printed.
#[derive(Clone)]
pub struct TokenKey {
    key: [u8; KEY_LEN],
    /// HMAC keyed with `key`, with the domain prefix already fed in: each
    /// token clones it instead of hashing the key again.
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(** redacted **)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read token key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write token key file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "token key file {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("token key file {path} holds {len} bytes, expected {KEY_LEN}; delete it to make a new one (tokens already issued will be refused)")]
    Corrupt { path: PathBuf, len: usize },
}

impl TokenKey {
    pub fn random() -> TokenKey {
        TokenKey::from_bytes(rand::random())
    }

    /// Loads `dir/token.key`, or creates it (mode 0600) with a new random key.
    pub fn load_or_create(dir: &Path) -> Result<TokenKey, TokenKeyError> {
        let path = dir.join(KEY_FILE);
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(TokenKeyError::Exposed { path, mode });
                }
                let bytes = std::fs::read(&path).map_err(|source| TokenKeyError::Read {
                    path: path.clone(),
                    source,
                })?;
                let key: [u8; KEY_LEN] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| TokenKeyError::Corrupt {
                            path: path.clone(),
                            len: bytes.len(),
                        })?;
                Ok(TokenKey::from_bytes(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !dir.exists() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(|source| TokenKeyError::CreateDir {
                            path: dir.to_path_buf(),
                            source,
                        })?;
                }
                let key = TokenKey::random();
                let write_error = |source| TokenKeyError::Write {
                    path: path.clone(),
                    source,
                };
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(write_error)?;
                file.write_all(&key.key).map_err(write_error)?;
                file.sync_all().map_err(write_error)?;
                Ok(key)
            }
            Err(source) => Err(TokenKeyError::Read { path, source }),
        }
    }

    fn from_bytes(key: [u8; KEY_LEN]) -> TokenKey {
        // HMAC pads a key shorter than SHA-256's 64-byte block with zeros
        // (RFC 2104), so this is the HMAC of `key`, made without the
        // fallible slice constructor.
        let mut block = [0u8; 64];
        block[..KEY_LEN].copy_from_slice(&key);
        let mut keyed = <Hmac<Sha256> as KeyInit>::new(&block.into());
        keyed.update(b"ec2metaproxy token v2\0");
        TokenKey { key, keyed }
    }

    fn mac(&self, holder: Holder<'_>, expires: u64) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        let ip = match holder.ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        mac.update(&ip);
        // Length-prefixed, so no container ID and expiry can run together.
        mac.update(&(holder.container.len() as u64).to_be_bytes());
        mac.update(holder.container.as_bytes());
        mac.update(&expires.to_be_bytes());
        mac
    }

    /// A token for `holder`, valid until `now + ttl_secs` (unix seconds).
    pub fn issue(&self, holder: Holder<'_>, ttl_secs: u64, now: u64) -> String {
        let expires = now + ttl_secs;
        let mut raw = Vec::with_capacity(RAW_LEN);
        raw.push(VERSION);
        raw.extend_from_slice(&expires.to_be_bytes());
        raw.extend_from_slice(&self.mac(holder, expires).finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// True when `token` was issued by this key to `holder`, or to its
    /// address while no container was known there, and has not expired.
    /// Says nothing of why not: the caller answers 401 either way.
    pub fn is_valid(&self, token: &[u8], holder: Holder<'_>, now: u64) -> bool {
        if token.len() != TOKEN_LEN {
            return false;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        if raw.len() != RAW_LEN || raw[0] != VERSION {
            return false;
        }
        let Ok(expires) = raw[1..9].try_into().map(u64::from_be_bytes) else {
            return false;
        };
        if expires <= now {
            return false;
        }
        let mac = &raw[9..];
        self.mac(holder, expires).verify_slice(mac).is_ok()
            || (!holder.container.is_empty()
                && self
                    .mac(Holder::address(holder.ip), expires)
                    .verify_slice(mac)
                    .is_ok())
    }
}

/// Whom a token is for: the caller's address and the container that held it
/// (empty for an address no container holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder<'a> {
    pub ip: IpAddr,
    pub container: &'a str,
}

impl<'a> Holder<'a> {
    /// `ip`, held by the container with ID `container` (`None`: by none).
    pub fn new(ip: IpAddr, container: Option<&'a str>) -> Holder<'a> {
        Holder {
            ip,
            container: container.unwrap_or(""),
        }
    }

    /// An address no container holds.
    pub fn address(ip: IpAddr) -> Holder<'static> {
        Holder::new(ip, None)
    }
}

/// Parses the TTL header of a token PUT: whole seconds in 1..=21600.
pub fn parse_ttl(value: Option<&http::HeaderValue>) -> Option<u64> {
    let text = value?.to_str().ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>()
        .ok()
        .filter(|ttl| (MIN_TTL_SECS..=MAX_TTL_SECS).contains(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const NOW: u64 = 1_800_000_000;

    fn ip(s: &str) -> Holder<'static> {
        Holder::address(s.parse().unwrap())
    }

    fn held(s: &str, container: &'static str) -> Holder<'static> {
        Holder {
            ip: s.parse().unwrap(),
            container,
        }
    }

    /// Tokens survive an upgrade: the key is padded as RFC 2104 (and the
    /// hmac crate's slice constructor, which made the earlier tokens) pads it.
    #[test]
    fn the_keyed_mac_is_the_hmac_of_the_key() {
        let key = [7u8; KEY_LEN];
        let holder = Holder::new("172.17.0.2".parse().unwrap(), Some("abc"));
        let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        reference.update(b"ec2metaproxy token v2\0");
        reference.update(
            &"172.17.0.2"
                .parse::<std::net::Ipv4Addr>()
                .unwrap()
                .to_ipv6_mapped()
                .octets(),
        );
        reference.update(&3u64.to_be_bytes());
        reference.update(b"abc");
        reference.update(&42u64.to_be_bytes());
        assert_eq!(
            TokenKey::from_bytes(key)
                .mac(holder, 42)
                .finalize()
                .into_bytes(),
            reference.finalize().into_bytes()
        );
    }

    #[test]
    fn a_token_is_bound_to_the_container_that_held_the_address() {
        let key = TokenKey::random();
        let token = key.issue(held("172.17.0.2", "aaaa"), 60, NOW);
        assert!(key.is_valid(token.as_bytes(), held("172.17.0.2", "aaaa"), NOW));
        assert!(
            !key.is_valid(token.as_bytes(), held("172.17.0.2", "bbbb"), NOW),
            "the address's next owner"
        );
        assert!(!key.is_valid(token.as_bytes(), ip("172.17.0.2"), NOW));
    }

    /// A container asking in its first milliseconds gets its token before
    /// the index knows it; the SDK then uses that token for the role listing.
    #[test]
    fn a_token_minted_while_the_address_had_no_known_holder_stays_valid_once_it_has() {
        let key = TokenKey::random();
        let token = key.issue(ip("172.17.0.2"), 60, NOW);
        assert!(key.is_valid(token.as_bytes(), held("172.17.0.2", "aaaa"), NOW));
        assert!(
            !key.is_valid(token.as_bytes(), held("172.17.0.3", "aaaa"), NOW),
            "another address"
        );
        assert!(
            !key.is_valid(token.as_bytes(), held("172.17.0.2", "aaaa"), NOW + 60),
            "expired"
        );
    }

    #[test]
    fn a_token_is_valid_for_its_ip_until_it_expires() {
        let key = TokenKey::random();
        let token = key.issue(ip("172.17.0.2"), 60, NOW);
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(key.is_valid(token.as_bytes(), ip("172.17.0.2"), NOW));
        assert!(key.is_valid(token.as_bytes(), ip("172.17.0.2"), NOW + 59));
        assert!(
            !key.is_valid(token.as_bytes(), ip("172.17.0.2"), NOW + 60),
            "expired"
        );
        assert!(
            !key.is_valid(token.as_bytes(), ip("172.17.0.3"), NOW),
            "another caller"
        );
    }

    /// Containers on an IPv6 network call from their GlobalIPv6Address.
    #[test]
    fn a_token_is_bound_to_an_ipv6_caller() {
        let key = TokenKey::random();
        let token = key.issue(held("fd00:d0c:1::2", "aaaa"), 60, NOW);
        assert!(key.is_valid(token.as_bytes(), held("fd00:d0c:1::2", "aaaa"), NOW));
        assert!(
            key.is_valid(token.as_bytes(), held("fd00:d0c:1:0:0:0:0:2", "aaaa"), NOW),
            "the same address, spelt long"
        );
        for other in ["fd00:d0c:1::3", "fd00:d0c:2::2", "::1", "172.17.0.2"] {
            assert!(
                !key.is_valid(token.as_bytes(), held(other, "aaaa"), NOW),
                "another caller: {other}"
            );
        }
        assert!(
            !key.is_valid(token.as_bytes(), held("fd00:d0c:1::2", "bbbb"), NOW),
            "the address's next owner"
        );
    }

    /// A dual-stack listener names an IPv4 caller `::ffff:a.b.c.d`: the
    /// same caller, so the same token; any other IPv6 address is another.
    #[test]
    fn an_ipv4_mapped_spelling_is_the_ipv4_caller() {
        let key = TokenKey::random();
        let token = key.issue(ip("172.17.0.2"), 60, NOW);
        assert!(key.is_valid(token.as_bytes(), ip("::ffff:172.17.0.2"), NOW));
        let mapped = key.issue(ip("::ffff:172.17.0.2"), 60, NOW);
        assert!(key.is_valid(mapped.as_bytes(), ip("172.17.0.2"), NOW));
        for other in ["::172.17.0.2", "64:ff9b::172.17.0.2", "::ffff:172.17.0.3"] {
            assert!(
                !key.is_valid(token.as_bytes(), ip(other), NOW),
                "another caller: {other}"
            );
        }
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let key = TokenKey::random();
        let token = key.issue(ip("172.17.0.2"), 60, NOW);
        let other = TokenKey::random();
        assert!(
            !other.is_valid(token.as_bytes(), ip("172.17.0.2"), NOW),
            "other key"
        );
        // Stretch the expiry without the key.
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[8] ^= 1;
        let stretched = URL_SAFE_NO_PAD.encode(raw);
        assert!(!key.is_valid(stretched.as_bytes(), ip("172.17.0.2"), NOW));
        for junk in [
            "",
            "x",
            &"A".repeat(TOKEN_LEN),
            &format!("{token}A"),
            &token.replace(|_| true, "!"),
        ] {
            assert!(
                !key.is_valid(junk.as_bytes(), ip("172.17.0.2"), NOW),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn the_key_file_survives_a_restart_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = TokenKey::load_or_create(&state).unwrap();
        let token = first.issue(ip("10.0.0.2"), 600, NOW);
        let meta = std::fs::metadata(state.join(KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let second = TokenKey::load_or_create(&state).unwrap();
        assert!(second.is_valid(token.as_bytes(), ip("10.0.0.2"), NOW + 1));
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        TokenKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = TokenKey::load_or_create(dir.path()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "token key file {0} is readable by other users (mode 644); run: chmod 600 {0}",
                path.display()
            )
        );
    }

    #[test]
    fn debug_does_not_print_the_key() {
        assert_eq!(
            format!("{:?}", TokenKey::from_bytes([7; KEY_LEN])),
            "TokenKey(** redacted **)"
        );
    }

    #[test]
    fn ttl_bounds() {
        let ttl = |s: &str| parse_ttl(Some(&http::HeaderValue::from_str(s).unwrap()));
        assert_eq!(ttl("1"), Some(1));
        assert_eq!(ttl("21600"), Some(21600));
        for bad in [
            "0",
            "21601",
            "",
            "-1",
            "1.5",
            " 60",
            "abc",
            "99999999999999999999999",
        ] {
            assert_eq!(ttl(bad), None, "{bad:?}");
        }
        assert_eq!(parse_ttl(None), None);
    }
}
