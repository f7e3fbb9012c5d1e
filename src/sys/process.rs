//! A handle on a process: whether it has exited, and which TCP
//! connections its network namespace holds.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use super::sockets::SocketTable;

/// A handle on a process (a pidfd), which the kernel makes readable the
/// instant the process exits: a container's init process, for one.
pub struct ProcessWatch {
    pid: i32,
    fd: OwnedFd,
    /// The TCP sockets of the process's network namespace, once asked for
    /// with [`with_socket_table`](Self::with_socket_table); why they cannot
    /// be read, when they cannot.
    sockets: Option<Result<SocketTable, String>>,
}

/// What a process's network namespace says of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// A connected socket with those addresses is there.
    Found,
    /// No such connection: whoever holds it, it is not this process's namespace.
    NotFound,
    /// The namespace cannot be asked; why, for the log.
    Unknown(String),
}

impl ProcessWatch {
    /// Watches `pid` with no check that it is a container's: for a caller
    /// that knows whose process it is (tests, a platform that owns its pids).
    pub fn unchecked(pid: i32) -> std::io::Result<ProcessWatch> {
        let Some(raw) = Pid::from_raw(pid) else {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        };
        let fd = pidfd_open(raw, PidfdFlags::empty())?;
        Ok(ProcessWatch::from_pidfd(pid, fd))
    }

    /// True once the process has exited. Never blocks.
    pub fn has_exited(&self) -> bool {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&now)) {
            Ok(ready) => ready > 0,
            // A pidfd that cannot be polled cannot vouch for the process.
            Err(_) => true,
        }
    }

    /// Watches the process `fd` (from `pidfd_open(2)`) refers to.
    pub fn from_pidfd(pid: i32, fd: OwnedFd) -> ProcessWatch {
        ProcessWatch {
            pid,
            fd,
            sockets: None,
        }
    }

    /// Also opens the socket table of the process's network namespace, so
    /// that [`connection`](Self::connection) can answer. Opening it enters
    /// the namespace, which needs CAP_SYS_ADMIN (and CAP_SYS_PTRACE for
    /// another user's process); a failure is kept to say why.
    pub fn with_socket_table(mut self) -> ProcessWatch {
        self.sockets = Some(SocketTable::open(self.fd.as_fd()).map_err(|error| {
            format!(
                "cannot enter the network namespace of pid {}: {error}",
                self.pid
            )
        }));
        self
    }

    /// Why the socket table could not be opened, when it could not.
    pub fn socket_table_error(&self) -> Option<&str> {
        match &self.sockets {
            Some(Err(why)) => Some(why),
            _ => None,
        }
    }

    /// Whether the process's network namespace holds a connection from
    /// `local` to any of `remotes`.
    pub fn connection(&self, local: SocketAddr, remotes: &[SocketAddr]) -> Connection {
        let table = match &self.sockets {
            Some(Ok(table)) => table,
            Some(Err(why)) => return Connection::Unknown(why.clone()),
            None => {
                return Connection::Unknown(format!(
                    "the sockets of pid {} were never opened",
                    self.pid
                ))
            }
        };
        for remote in remotes {
            match table.has_connection(local, *remote) {
                Ok(true) => return Connection::Found,
                Ok(false) => {}
                Err(error) => {
                    return Connection::Unknown(format!(
                        "asking the network namespace of pid {}: {error}",
                        self.pid
                    ))
                }
            }
        }
        Connection::NotFound
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }
}

impl fmt::Debug for ProcessWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessWatch")
            .field("pid", &self.pid)
            .finish()
    }
}

/// Two watches are the same when they watch the same pid.
impl PartialEq for ProcessWatch {
    fn eq(&self, other: &ProcessWatch) -> bool {
        self.pid == other.pid
    }
}

impl Eq for ProcessWatch {}
