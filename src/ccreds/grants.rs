//! The grants' tokens: one random token per grant, in a file of its own
//! under the token directory (`NAME/token`), which the operator hands to
//! the workload (a read-only mount of `NAME/`, systemd's `LoadCredential=`).
//!
//! The proxy keeps only each token's SHA-256 digest in memory and compares
//! a presented token's digest with every grant's in constant time, so
//! neither the time taken nor a log line tells a caller how close it came.
//! The files are re-read every second ([`Grants::refresh`]): replacing a
//! file (`--rotate-grant`) or deleting it (the proxy writes a new one)
//! rotates the token without a restart.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 32 random bytes: well over the 128 bits a guess must beat.
const TOKEN_BYTES: usize = 32;
/// Their unpadded base64url form, the only length a token can have.
pub const TOKEN_LEN: usize = 43;

/// One grant: a name (the token file's and the STS session's) and the
/// alias whose role it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub alias: String,
}

/// Why the token directory or a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("cannot create token directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "token directory {path} is writable by group or others (mode {mode:o}): anyone who \
         can write there can replace a grant's token; run: chmod go-w {path}"
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A grant with its current token's digest (never the token).
struct Entry {
    grant: Arc<Grant>,
    digest: [u8; 32],
}

/// Every grant's current token, as the door checks them.
pub struct Grants {
    dir: PathBuf,
    grants: Vec<Arc<Grant>>,
    current: ArcSwap<Vec<Entry>>,
}

/// What a presented `Authorization` value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Granted(Arc<Grant>),
    /// Not the shape of any token: wrong length or alphabet.
    Malformed,
    /// Well formed, but no grant's current token.
    Unknown,
}

impl Grants {
    /// The grants' tokens in `dir`: the directory is made (0700) when
    /// missing and refused when group or others may write to it; a grant
    /// without a token file gets a new token.
    pub fn open(dir: &Path, grants: Vec<Grant>) -> Result<Grants, GrantError> {
        ensure_dir(dir)?;
        let grants = Grants {
            dir: dir.to_path_buf(),
            grants: grants.into_iter().map(Arc::new).collect(),
            current: ArcSwap::from_pointee(Vec::new()),
        };
        grants.refresh()?;
        Ok(grants)
    }

    /// The grants, in the config's order.
    pub fn grants(&self) -> &[Arc<Grant>] {
        &self.grants
    }

    /// Where `grant`'s token file is.
    pub fn path(&self, grant: &str) -> PathBuf {
        token_path(&self.dir, grant)
    }

    /// Reads every grant's file again (writing a new token where one was
    /// deleted) and puts the tokens found in force. A grant whose file
    /// cannot be read keeps no token: it is refused until it can.
    pub fn refresh(&self) -> Result<(), GrantError> {
        let mut entries = Vec::with_capacity(self.grants.len());
        let mut first_error = None;
        for grant in &self.grants {
            match load_or_create(&self.dir, &grant.name) {
                Ok(token) => entries.push(Entry {
                    grant: grant.clone(),
                    digest: Sha256::digest(token.as_bytes()).into(),
                }),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        self.current.store(Arc::new(entries));
        first_error.map_or(Ok(()), Err)
    }

    /// Which grant `presented` (an `Authorization` value, verbatim) is the
    /// token of. Every grant's digest is compared, in constant time.
    pub fn check(&self, presented: &[u8]) -> Verdict {
        if presented.len() != TOKEN_LEN
            || !presented
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Verdict::Malformed;
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let current = self.current.load();
        let mut found = None;
        for entry in current.iter() {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry.grant.clone());
            }
        }
        found.map_or(Verdict::Unknown, Verdict::Granted)
    }
}

/// `DIR/NAME/token`: a directory per grant, so that a workload can mount
/// the grant's directory, which sees a rotation's rename; a bind mount of
/// the file itself would keep the old file.
fn token_path(dir: &Path, grant: &str) -> PathBuf {
    dir.join(grant).join("token")
}

fn ensure_dir(dir: &Path) -> Result<(), GrantError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| GrantError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let meta = std::fs::metadata(dir).map_err(|source| GrantError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(GrantError::Writable {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// `grant`'s token from its file, or a new one written when there is none.
fn load_or_create(dir: &Path, grant: &str) -> Result<String, GrantError> {
    let path = token_path(dir, grant);
    match std::fs::read_to_string(&path) {
        Ok(token) => Ok(token),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => rotate(dir, grant),
        Err(source) => Err(GrantError::Read { path, source }),
    }
}

/// Writes a new token for `grant`, atomically (a reader sees the old file
/// or the new one, never a part), mode 0600, with no trailing newline
/// (SDKs send the file's bytes verbatim). Returns the token.
pub fn rotate(dir: &Path, grant: &str) -> Result<String, GrantError> {
    ensure_dir(dir)?;
    ensure_dir(&dir.join(grant))?;
    let path = token_path(dir, grant);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(rand::random::<[u8; TOKEN_BYTES]>());
    let temporary = dir
        .join(grant)
        .join(format!(".token.{}", std::process::id()));
    let write_error = |source| GrantError::Write {
        path: path.clone(),
        source,
    };
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(write_error)?;
    file.write_all(token.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    std::fs::rename(&temporary, &path).map_err(write_error)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn web() -> Vec<Grant> {
        vec![Grant {
            name: "web".into(),
            alias: "web".into(),
        }]
    }

    #[test]
    fn a_new_grant_gets_a_0600_token_file_without_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        let grants = Grants::open(&dir.path().join("grants"), web()).unwrap();
        let meta = std::fs::metadata(grants.path("web")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        for made in [dir.path().join("grants"), dir.path().join("grants/web")] {
            assert_eq!(
                std::fs::metadata(&made).unwrap().mode() & 0o777,
                0o700,
                "{made:?}"
            );
        }
        let token = std::fs::read_to_string(grants.path("web")).unwrap();
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(!token.ends_with('\n'));
        assert!(matches!(grants.check(token.as_bytes()), Verdict::Granted(g) if g.name == "web"));
    }

    #[test]
    fn a_group_writable_token_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        let error = Grants::open(dir.path(), web()).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "token directory {0} is writable by group or others (mode 770): anyone who can \
                 write there can replace a grant's token; run: chmod go-w {0}",
                dir.path().display()
            )
        );
    }

    #[test]
    fn a_rotated_token_replaces_the_old_one_on_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let grants = Grants::open(dir.path(), web()).unwrap();
        let old = std::fs::read_to_string(grants.path("web")).unwrap();
        let new = rotate(dir.path(), "web").unwrap();
        assert_ne!(old, new);
        grants.refresh().unwrap();
        assert_eq!(grants.check(old.as_bytes()), Verdict::Unknown);
        assert!(matches!(grants.check(new.as_bytes()), Verdict::Granted(_)));
        // Deleting the file rotates too.
        std::fs::remove_file(grants.path("web")).unwrap();
        grants.refresh().unwrap();
        assert_eq!(grants.check(new.as_bytes()), Verdict::Unknown);
    }

    #[test]
    fn malformed_tokens_are_told_apart_from_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let grants = Grants::open(dir.path(), web()).unwrap();
        assert_eq!(grants.check(b""), Verdict::Malformed);
        assert_eq!(grants.check(&[b'a'; 44]), Verdict::Malformed);
        assert_eq!(grants.check(&[b'!'; TOKEN_LEN]), Verdict::Malformed);
        assert_eq!(grants.check(&[b'a'; TOKEN_LEN]), Verdict::Unknown);
    }
}
