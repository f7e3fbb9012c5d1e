//! Proof that a connection is the container's own.
//!
//! The proxy knows a caller by the TCP source address, and on a Docker bridge
//! an address is no proof: a neighbour with the default CAP_NET_RAW can claim
//! it (ARP, or the container's own MAC) and complete a handshake from a packet
//! socket. What the neighbour cannot do is put its end of that connection in
//! the container's network namespace. So before a connection is served as a
//! container's, the container's namespace is asked, with sock_diag, for the
//! exact connection: local address and port the caller's, remote address one
//! the caller may have dialled. The container's real connections are there;
//! a spoofed one never is.
//!
//! The netlink socket that asks is opened once per container, inside its
//! namespace (a netlink socket answers for the namespace it was made in),
//! by a short-lived thread that enters the namespace through the init
//! process's pidfd. That needs CAP_SYS_ADMIN. An exact lookup is one netlink
//! round trip of a few microseconds; a dump or `/proc/<pid>/net/tcp` would walk
//! every socket of the host and take milliseconds.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2,
};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use rustix::io::Errno;
use rustix::net::netlink::{SocketAddrNetlink, SOCK_DIAG};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// A container's TCP sockets, as its own network namespace sees them.
pub struct SocketTable {
    /// A sock_diag netlink socket made inside the namespace; locked for each
    /// request and its reply, so concurrent lookups never take each other's.
    socket: Mutex<OwnedFd>,
}

impl fmt::Debug for SocketTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SocketTable")
    }
}

impl SocketTable {
    /// Opens the table of the network namespace that `pidfd`'s process is in.
    pub fn open(pidfd: BorrowedFd<'_>) -> io::Result<SocketTable> {
        // setns changes the calling thread's namespace for good: a thread of
        // its own, which ends right after, so no other work runs in there.
        let socket = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    rustix::thread::move_into_link_name_space(
                        pidfd,
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )?;
                    let socket = rustix::net::socket_with(
                        AddressFamily::NETLINK,
                        SocketType::RAW,
                        SocketFlags::CLOEXEC,
                        Some(SOCK_DIAG),
                    )?;
                    rustix::net::connect(&socket, &SocketAddrNetlink::new(0, 0))?;
                    Ok::<_, io::Error>(socket)
                })
                .join()
                .map_err(|_| io::Error::other("the namespace thread panicked"))?
        })?;
        Ok(SocketTable {
            socket: Mutex::new(socket),
        })
    }

    /// True when a connected TCP socket from `local` to `remote` exists in
    /// the namespace. A socket listening on `local`'s port, or one in
    /// TIME_WAIT, is not one that can be talking to us.
    pub fn has_connection(&self, local: SocketAddr, remote: SocketAddr) -> io::Result<bool> {
        let (local, remote) = (canonical(local), canonical(remote));
        if local.is_ipv4() != remote.is_ipv4() {
            return Ok(false);
        }
        let mut id = if local.is_ipv4() {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        id.source_address = local.ip();
        id.source_port = local.port();
        id.destination_address = remote.ip();
        id.destination_port = remote.port();
        // All ones: no cookie to match (the kernel's INET_DIAG_NOCOOKIE).
        id.cookie = [0xff; 8];
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family: if local.is_ipv4() { AF_INET } else { AF_INET6 },
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: id.clone(),
            })
            .into(),
        );
        request.finalize();
        let mut bytes = [0u8; 128];
        let len = request.buffer_len();
        request.serialize(&mut bytes[..len]);
        let mut reply = [0u8; 512];
        let received = {
            let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
            rustix::net::send(&*socket, &bytes[..len], SendFlags::empty())?;
            // The kernel queues the answer to an exact lookup before send
            // returns: never wait on the socket.
            rustix::net::recv(&*socket, &mut reply[..], RecvFlags::DONTWAIT)?.0
        };
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(&reply[..received])
            .map_err(|e| io::Error::other(format!("sock_diag reply: {e}")))?;
        match message.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(found)) => {
                let found = &found.header;
                Ok(found.socket_id.source_port == id.source_port
                    && found.socket_id.destination_port == id.destination_port
                    && found.socket_id.source_address.to_canonical() == id.source_address
                    && found.socket_id.destination_address.to_canonical() == id.destination_address
                    && matches!(found.state, TCP_ESTABLISHED | TCP_FIN_WAIT1 | TCP_FIN_WAIT2))
            }
            NetlinkPayload::Error(error) if error.raw_code() == -Errno::NOENT.raw_os_error() => {
                Ok(false)
            }
            NetlinkPayload::Error(error) => Err(error.to_io()),
            other => Err(io::Error::other(format!(
                "sock_diag: unexpected reply {other:?}"
            ))),
        }
    }
}

/// An IPv4 address written as IPv4-mapped IPv6 is looked up as IPv4: the
/// kernel files a dual-stack socket's IPv4 connection under its IPv4 tuple.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::process::Command;

    use rustix::process::{getpid, pidfd_open, PidfdFlags};

    /// Entering a network namespace needs CAP_SYS_ADMIN: as root (as CI
    /// runs), the table must open; otherwise it must say so, as EPERM.
    fn open_or_explain(pidfd: BorrowedFd<'_>) -> Option<SocketTable> {
        match SocketTable::open(pidfd) {
            Ok(table) => Some(table),
            Err(error) if !rustix::process::geteuid().is_root() => {
                assert_eq!(error.raw_os_error(), Some(Errno::PERM.raw_os_error()));
                None
            }
            Err(error) => panic!("opening the socket table as root: {error}"),
        }
    }

    /// The socket table of this test process's own namespace, or `None`
    /// (after checking why) when it cannot be opened.
    fn own_table() -> Option<SocketTable> {
        let own = pidfd_open(getpid(), PidfdFlags::empty()).unwrap();
        open_or_explain(own.as_fd())
    }

    fn connected_pair() -> (TcpListener, TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (listener, client, server)
    }

    #[test]
    fn a_connection_is_found_in_its_own_namespace_by_its_exact_addresses() {
        let Some(table) = own_table() else {
            return;
        };
        let (listener, client, _server) = connected_pair();
        let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        assert!(table.has_connection(local, remote).unwrap());
        // The same, written as IPv4-mapped IPv6 (a dual-stack listener's view).
        let mapped = |a: SocketAddr| match a {
            SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
            v6 => v6,
        };
        assert!(table.has_connection(mapped(local), mapped(remote)).unwrap());
        // Another port on either side is another connection.
        let other_port = SocketAddr::new(local.ip(), local.port().wrapping_add(1).max(1));
        assert!(!table.has_connection(other_port, remote).unwrap());
        let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(!table.has_connection(local, elsewhere).unwrap());
        // A listening socket on the port is no connection.
        let listening = listener.local_addr().unwrap();
        assert!(!table.has_connection(listening, elsewhere).unwrap());
    }

    #[test]
    fn a_closed_connection_is_no_longer_found() {
        let Some(table) = own_table() else {
            return;
        };
        let (_listener, client, server) = connected_pair();
        let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        // The server closes first and the client follows: the client's side
        // passes through LAST_ACK and is gone, the server's sits in TIME_WAIT.
        drop(server);
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!table.has_connection(local, remote).unwrap());
        assert!(
            !table.has_connection(remote, local).unwrap(),
            "TIME_WAIT is no connection"
        );
    }

    #[test]
    fn a_connection_of_this_namespace_is_not_found_in_another() {
        if !rustix::process::geteuid().is_root() {
            // No namespace of our own can be made either: the EPERM is the rule.
            assert!(own_table().is_none());
            return;
        }
        // A process in a network namespace of its own, as a container's init is.
        let mut child = Command::new("unshare")
            .args(["--net", "sleep", "30"])
            .spawn()
            .expect("unshare (util-linux) runs");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let pidfd = pidfd_open(pid, PidfdFlags::empty()).unwrap();
        // unshare makes the namespace, then execs sleep: wait for the exec.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{}/exe", child.id()))
            .is_ok_and(|exe| !exe.ends_with("sleep"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let table = open_or_explain(pidfd.as_fd()).expect("root opens any table");
        let (_listener, client, _server) = connected_pair();
        let found = table.has_connection(client.local_addr().unwrap(), client.peer_addr().unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!found.unwrap());
    }
}
