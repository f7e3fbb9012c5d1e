//! Whether a container's init process still runs, asked of the kernel.
//!
//! Docker reports a container's death on its event stream, and the index
//! applies it a few milliseconds later (much later while the stream is
//! broken). In that window a new container can be given the address. Docker
//! frees an address only after the container's init process has exited, so a
//! pidfd on that process, which the kernel makes readable the instant it
//! exits, tells the request path for certain whether the address can still
//! be the indexed container's. Checking it costs one `poll(2)`.
//!
//! A pid from Docker means something here only if the proxy shares Docker's
//! PID namespace (a host process, or a container run with `--pid=host`) and
//! Docker is local. Each process is therefore checked against its container:
//! its `/proc/<pid>/cgroup` must name the container's ID. Until one container
//! has passed that check, a missing process says nothing (the pid may be
//! another namespace's); after, it means the container is gone.

use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::Errno;
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use crate::sys::ProcessWatch;

/// What opening a watch on a container's process found.
#[derive(Debug)]
pub enum Opened {
    Running(ProcessWatch),
    /// The process has exited: the container is not running, whatever Docker says.
    Exited,
    /// No check is possible (another PID namespace, a remote Docker, no
    /// pidfd support); the reason is for the log.
    Unverifiable(String),
}

/// Opens watches and remembers whether Docker's pids have been seen to be
/// this process's pids.
#[derive(Debug, Default)]
pub struct ProcessWatcher {
    pids_are_ours: AtomicBool,
    warned: AtomicBool,
    /// Whether a socket table that could not be opened has been reported.
    warned_sockets: AtomicBool,
}

impl ProcessWatcher {
    pub fn new() -> ProcessWatcher {
        ProcessWatcher::default()
    }

    /// Watches `pid`, which Docker says is the init process of container
    /// `id`, and opens its network namespace's socket table, which proves
    /// the container's connections (see [`crate::sys::sockets`]).
    pub fn open(&self, pid: i64, id: &str) -> Opened {
        match self.open_checked(pid, id, cgroup_names) {
            Opened::Running(watch) => {
                let watch = watch.with_socket_table();
                if let Some(why) = watch.socket_table_error() {
                    if !self.warned_sockets.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "cannot prove that a connection is its container's ({why}); give \
                             the proxy CAP_SYS_ADMIN and CAP_SYS_PTRACE (see docs/security.md)"
                        );
                    }
                }
                Opened::Running(watch)
            }
            Opened::Unverifiable(why) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "cannot watch container processes ({why}); an address is then known to \
                         be free only from Docker's events, and no connection can be proven to \
                         be its container's (run the proxy in the host's PID namespace and let \
                         it read /proc; see docs/security.md)"
                    );
                }
                Opened::Unverifiable(why)
            }
            Opened::Exited => Opened::Exited,
        }
    }

    fn open_checked(
        &self,
        pid: i64,
        id: &str,
        belongs: impl Fn(i32, &str) -> std::io::Result<bool>,
    ) -> Opened {
        let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            return Opened::Unverifiable(format!("Docker gave container pid {pid}"));
        };
        let raw = pid.as_raw_nonzero().get();
        let fd = match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(Errno::SRCH) if self.pids_are_ours.load(Ordering::Relaxed) => {
                return Opened::Exited
            }
            Err(Errno::SRCH) => {
                return Opened::Unverifiable(format!(
                    "pid {raw} of a running container does not exist here"
                ))
            }
            Err(error) => return Opened::Unverifiable(format!("pidfd_open: {error}")),
        };
        let watch = ProcessWatch::from_pidfd(raw, fd);
        if watch.has_exited() {
            return Opened::Exited;
        }
        match belongs(raw, id) {
            Ok(true) => {}
            // Docker's pid is someone else's here: either the container's
            // process is gone and its pid reused, or the pids are not ours.
            Ok(false) if self.pids_are_ours.load(Ordering::Relaxed) => return Opened::Exited,
            Ok(false) => {
                return Opened::Unverifiable(format!(
                    "pid {raw} is not in container {}'s cgroup here",
                    &id[..id.len().min(12)]
                ))
            }
            Err(error) => {
                return Opened::Unverifiable(format!("reading /proc/{raw}/cgroup: {error}"))
            }
        }
        // Still running after the check, so the /proc entry read was this process's.
        if watch.has_exited() {
            return Opened::Exited;
        }
        if !self.pids_are_ours.swap(true, Ordering::Relaxed) {
            log::info!(
                "watching containers' init processes: an exited container is not served, \
                 even before Docker reports it"
            );
        }
        Opened::Running(watch)
    }
}

/// The inode of the initial PID namespace (the kernel's PROC_PID_INIT_INO).
const INITIAL_PID_NAMESPACE: u64 = 0xEFFF_FFFC;

/// What stands in the way of proving that a connection is its container's
/// own, as far as can be told before any container is seen: each item says
/// why, for the start-up log. Empty when nothing does.
pub fn proof_obstacles(docker_host: &str) -> Vec<String> {
    use rustix::thread::{capabilities, CapabilitySet};
    let mut obstacles = Vec::new();
    if !docker_host.starts_with("unix://") {
        obstacles.push(format!(
            "Docker at {docker_host} is not on this host's socket, so its processes are not ours"
        ));
    }
    if let Ok(ns) = std::fs::metadata("/proc/self/ns/pid") {
        use std::os::unix::fs::MetadataExt;
        if ns.ino() != INITIAL_PID_NAMESPACE {
            obstacles.push(
                "the proxy runs in a PID namespace of its own (run it on the host, or with \
                 --pid=host)"
                    .into(),
            );
        }
    }
    match capabilities(None) {
        Ok(caps) => {
            let mut missing = Vec::new();
            if !caps.effective.contains(CapabilitySet::SYS_ADMIN) {
                missing.push("CAP_SYS_ADMIN");
            }
            // Entering another user's process's namespace passes a ptrace
            // check; containers' processes are usually root's.
            if !rustix::process::geteuid().is_root()
                && !caps.effective.contains(CapabilitySet::SYS_PTRACE)
            {
                missing.push("CAP_SYS_PTRACE");
            }
            if !missing.is_empty() {
                obstacles.push(format!(
                    "entering a container's network namespace needs {}",
                    missing.join(" and ")
                ));
            }
        }
        Err(error) => obstacles.push(format!("cannot read the proxy's capabilities: {error}")),
    }
    obstacles
}

/// Whether `/proc/<pid>/cgroup` names container `id`. Docker puts each
/// container in a cgroup named after its full ID (`/docker/<id>`,
/// `docker-<id>.scope`), under cgroup v1 and v2 and seen from any cgroup namespace.
fn cgroup_names(pid: i32, id: &str) -> std::io::Result<bool> {
    if id.len() < 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(false);
    }
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    Ok(cgroups.lines().any(|line| line.contains(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn sleeper() -> Child {
        Command::new("sleep").arg("30").spawn().expect("sleep runs")
    }

    #[test]
    fn a_watch_sees_its_process_exit() {
        let mut child = sleeper();
        let watcher = ProcessWatcher::new();
        let Opened::Running(watch) = watcher.open_checked(child.id().into(), ID, |_, _| Ok(true))
        else {
            panic!("a live process is running");
        };
        assert!(!watch.has_exited());
        child.kill().unwrap();
        // Exited even before it is reaped: the zombie counts as gone.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(watch.has_exited());
        child.wait().unwrap();
        assert!(watch.has_exited());
    }

    #[test]
    fn a_process_of_another_cgroup_is_unverifiable_until_pids_are_known_to_be_ours() {
        let mut child = sleeper();
        let pid = child.id().into();
        let watcher = ProcessWatcher::new();
        assert!(matches!(
            watcher.open_checked(pid, ID, |_, _| Ok(false)),
            Opened::Unverifiable(_)
        ));
        assert!(matches!(
            watcher.open_checked(pid, ID, |_, _| Ok(true)),
            Opened::Running(_)
        ));
        // Now Docker's pids are known to be ours: a pid outside the
        // container's cgroup means its process is gone and the pid reused.
        assert!(matches!(
            watcher.open_checked(pid, ID, |_, _| Ok(false)),
            Opened::Exited
        ));
        child.kill().unwrap();
        child.wait().unwrap();
        // Reaped: the pid no longer exists.
        assert!(matches!(
            watcher.open_checked(pid, ID, |_, _| Ok(true)),
            Opened::Exited
        ));
    }

    #[test]
    fn a_missing_pid_says_nothing_before_any_process_was_verified() {
        let mut child = sleeper();
        let pid = child.id().into();
        child.kill().unwrap();
        child.wait().unwrap();
        let watcher = ProcessWatcher::new();
        assert!(matches!(
            watcher.open_checked(pid, ID, |_, _| Ok(true)),
            Opened::Unverifiable(_)
        ));
        assert!(matches!(
            watcher.open_checked(0, ID, |_, _| Ok(true)),
            Opened::Unverifiable(_)
        ));
    }

    #[test]
    fn the_cgroup_check_wants_the_full_id_in_the_process_cgroup() {
        let me = std::process::id() as i32;
        // This test process is in no container's cgroup.
        assert!(!cgroup_names(me, ID).unwrap());
        assert!(!cgroup_names(me, "").unwrap());
        assert!(!cgroup_names(me, "/").unwrap());
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own.lines().next().unwrap().rsplit(':').next().unwrap();
        // Only an ID-shaped string is looked for, so a short path segment
        // that happens to appear does not pass.
        assert!(!cgroup_names(me, path).unwrap());
    }
}
