//! Live reload of the config file, on SIGHUP and when the file changes.
//!
//! A new file is validated whole; only a valid one is swapped in, and the
//! previous config keeps serving otherwise. The broker and the IMDS door
//! know no config file: they read the alias map and the door's settings
//! through cells of their own ([`Live`]), which a reload fills from the new
//! config. Requests read each cell as an `Arc` snapshot, so a swap drops no
//! connection and no cached credentials: a container whose alias now names
//! another role simply asks for a different cache key, and the old role's
//! credentials are never served to it again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};

use crate::config::Config;
use crate::imds;
use crate::metrics::metrics;
use crate::roles::RoleMap;

/// The config in force, and the cells built from it that the broker (the
/// alias map) and the IMDS door (its settings) read on every request.
pub struct Live {
    config: ArcSwap<Config>,
    roles: Arc<ArcSwap<RoleMap>>,
    imds: Arc<ArcSwap<imds::Settings>>,
}

impl Live {
    pub fn new(config: Config) -> Live {
        Live {
            roles: Arc::new(ArcSwap::from_pointee(config.roles())),
            imds: Arc::new(ArcSwap::from_pointee(config.imds_settings())),
            config: ArcSwap::from_pointee(config),
        }
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The alias map's cell, for the broker.
    pub fn roles(&self) -> Arc<ArcSwap<RoleMap>> {
        self.roles.clone()
    }

    /// The IMDS door's settings' cell.
    pub fn imds_settings(&self) -> Arc<ArcSwap<imds::Settings>> {
        self.imds.clone()
    }

    /// Puts `next` in force. The cells are stored one after the other, not
    /// in one atomic step, so a request may read the new alias map with the
    /// old door settings (or the reverse). That is harmless: each request
    /// reads each cell once, the two hold independent settings, and an
    /// answer remembered from one pair is given again only while both cells
    /// still hold that pair (imds/remembered.rs).
    pub fn store(&self, next: Config) {
        self.roles.store(Arc::new(next.roles()));
        self.imds.store(Arc::new(next.imds_settings()));
        self.config.store(Arc::new(next));
    }
}

/// Editors write a file in bursts (truncate, write, rename): wait for quiet.
const SETTLE: Duration = Duration::from_millis(200);

/// What one reload did, for the log and for tests.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied { restart_needed: Vec<&'static str> },
    Unchanged,
    Refused(String),
}

/// Reads `path` and puts its live part in force in `live` when valid and
/// changed. The fixed part keeps its running values, so that what the
/// config says and what the process does agree until the restart; its
/// changed keys are reported.
pub fn reload(path: &Path, live: &Live) -> Outcome {
    let current = live.config();
    let next = match Config::load(path) {
        Ok(next) => next,
        Err(error) => {
            metrics().reloads.with_label_values(&["failed"]).inc();
            let mut message = error.to_string();
            if let Some(hint) = error.hint() {
                message.push_str("; hint: ");
                message.push_str(&hint);
            }
            log::error!("config reload refused, still serving the previous config: {message}");
            return Outcome::Refused(message);
        }
    };
    let restart_needed = current.fixed.changed_keys(&next.fixed);
    for key in &restart_needed {
        log::warn!(
            "config key \"{key}\" changed in {}; it takes effect after a restart",
            path.display()
        );
    }
    if next.live == current.live {
        return Outcome::Unchanged;
    }
    log::info!(
        "config reloaded from {}: {} aliases, default \"{}\"",
        path.display(),
        next.live.aliases.len(),
        next.live.default_alias
    );
    live.store(next.with_fixed(&current));
    metrics().reloads.with_label_values(&["ok"]).inc();
    Outcome::Applied { restart_needed }
}

/// Reloads on SIGHUP and on changes to `path` (watched through its
/// directory, so editors that replace the file by rename are seen).
pub fn spawn(path: PathBuf, live: Arc<Live>) -> Result<(), notify::Error> {
    let file = path.clone();
    watch(path, move || {
        reload(&file, &live);
    })
}

/// Calls `on_change` after `path` changes on disk (once per burst of
/// writes) and on every SIGHUP.
pub fn watch(path: PathBuf, on_change: impl Fn() + Send + 'static) -> Result<(), notify::Error> {
    // SIGHUP first: its default action ends the process, so the handler
    // must be in place even when the file cannot be watched.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(notify::Error::io)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let file_name = path.file_name().map(|n| n.to_os_string());
    let directory = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
            if ours && !event.kind.is_access() {
                let _ = tx.send(());
            }
        }
    })
    .and_then(|mut watcher| {
        watcher.watch(&directory, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    let (watcher, result) = match watcher {
        Ok(watcher) => (Some(watcher), Ok(())),
        Err(error) => (None, Err(error)),
    };
    tokio::spawn(async move {
        // The watcher stops when dropped: it lives as long as this task.
        let _watcher = watcher;
        loop {
            tokio::select! {
                Some(()) = rx.recv() => {
                    // Let the burst of writes settle, then read once.
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                    log::debug!("{} changed on disk", path.display());
                }
                Some(()) = hangup.recv() => log::info!("SIGHUP: reloading {}", path.display()),
                else => return,
            }
            on_change();
        }
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        r#"{"aliasToARN": {"web": "arn:aws:iam::123456789012:role/Web"}, "defaultAlias": "web"}"#;
    const REMAPPED: &str = r#"{"aliasToARN": {"web": "arn:aws:iam::123456789012:role/Other"}, "defaultAlias": "web", "listen": ":1"}"#;

    fn setup() -> (tempfile::TempDir, PathBuf, Live) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, GOOD).unwrap();
        let shared = Live::new(Config::load(&path).unwrap());
        (dir, path, shared)
    }

    #[test]
    fn a_valid_file_is_swapped_in_and_restart_only_keys_are_reported() {
        let (_dir, path, shared) = setup();
        std::fs::write(&path, REMAPPED).unwrap();
        assert_eq!(
            reload(&path, &shared),
            Outcome::Applied {
                restart_needed: vec!["listen"]
            }
        );
        let now = shared.config();
        assert_eq!(now.roles().get("web").unwrap().arn.name(), "Other");
        assert_eq!(
            shared.roles().load().get("web").unwrap().arn.name(),
            "Other",
            "the broker's cell holds the new alias map"
        );
        assert_eq!(
            now.fixed.listen,
            ["0.0.0.0:18000".parse().unwrap()],
            "still the running listen address"
        );
    }

    #[test]
    fn an_invalid_file_is_refused_with_the_check_message_and_the_old_config_stays() {
        let (_dir, path, shared) = setup();
        std::fs::write(
            &path,
            r#"{"aliasToARN": {"web": "nope"}, "defaultAlias": "web"}"#,
        )
        .unwrap();
        let outcome = reload(&path, &shared);
        let Outcome::Refused(message) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(message.ends_with("key \"aliasToARN.web\": \"nope\" is not an IAM role ARN (expected arn:aws:iam::ACCOUNT:role/NAME)"), "{message}");
        assert_eq!(
            shared.config().roles().get("web").unwrap().arn.name(),
            "Web"
        );
        assert_eq!(shared.roles().load().get("web").unwrap().arn.name(), "Web");
    }

    #[test]
    fn a_change_to_an_alias_objects_external_id_alone_is_applied() {
        let (_dir, path, shared) = setup();
        std::fs::write(
            &path,
            r#"{"aliasToARN": {"web": {"arn": "arn:aws:iam::123456789012:role/Web", "externalId": "new-id"}}, "defaultAlias": "web"}"#,
        )
        .unwrap();
        assert_eq!(
            reload(&path, &shared),
            Outcome::Applied {
                restart_needed: vec![]
            }
        );
        assert_eq!(
            shared
                .config()
                .roles()
                .get("web")
                .unwrap()
                .external_id
                .as_deref(),
            Some("new-id")
        );
    }

    #[test]
    fn an_identical_file_changes_nothing() {
        let (_dir, path, shared) = setup();
        let (roles, settings) = (
            shared.roles().load_full(),
            shared.imds_settings().load_full(),
        );
        assert_eq!(reload(&path, &shared), Outcome::Unchanged);
        assert!(Arc::ptr_eq(&roles, &shared.roles().load()));
        assert!(Arc::ptr_eq(&settings, &shared.imds_settings().load()));
    }

    #[test]
    fn a_new_passthrough_list_reaches_the_imds_doors_cell() {
        let (_dir, path, shared) = setup();
        std::fs::write(
            &path,
            r#"{"aliasToARN": {"web": "arn:aws:iam::123456789012:role/Web"}, "defaultAlias": "web",
                "passthrough": ["meta-data/instance-id"], "requireToken": true}"#,
        )
        .unwrap();
        assert_eq!(
            reload(&path, &shared),
            Outcome::Applied {
                restart_needed: vec![]
            }
        );
        let settings = shared.imds_settings().load_full();
        assert_eq!(
            settings.passthrough,
            vec!["meta-data/instance-id".to_string()]
        );
        assert!(settings.require_token);
    }

    #[tokio::test]
    async fn a_file_replaced_by_rename_is_picked_up() {
        let (dir, path, shared) = setup();
        let shared = Arc::new(shared);
        spawn(path.clone(), shared.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // What vim and most editors do: write a new file, rename it over.
        let temp = dir.path().join(".config.json.swp");
        std::fs::write(&temp, REMAPPED).unwrap();
        std::fs::rename(&temp, &path).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while shared.roles().load().get("web").unwrap().arn.name() != "Other" {
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
