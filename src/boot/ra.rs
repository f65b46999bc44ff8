//! IPv6 router advertisements that say "no router here" on boot networks.
//!
//! iPXE configures IPv6 and IPv4 side by side and, on a segment where no
//! router ever answers its solicitation, waits about 13 s for IPv6 before it
//! goes on with DHCPv4 — on every boot of every node. Any router advertisement
//! ends that wait; one with router lifetime 0 and no prefix changes nothing
//! else for anyone on the segment (hosts install no default route and no
//! address from it). The appliance can send one where the site has no IPv6
//! router (`boot.ipv6_ra_interfaces`): in answer to every router solicitation
//! and every few seconds unsolicited.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// Unsolicited advertisements this often (RFC 4861 allows 4–1800 s).
const INTERVAL: Duration = Duration::from_secs(4);

/// A router advertisement with router lifetime 0, no flags, no options. The
/// kernel fills in the checksum of ICMPv6 raw sockets.
pub fn advertisement() -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = ROUTER_ADVERTISEMENT;
    p[4] = 64; // current hop limit hint
    // flags 0, router lifetime 0, reachable 0, retrans 0
    p
}

/// Whether an ICMPv6 message (as a raw socket delivers it, header first) is a
/// router solicitation.
pub fn is_solicitation(msg: &[u8]) -> bool {
    msg.len() >= 8 && msg[0] == ROUTER_SOLICITATION && msg[1] == 0
}

/// A raw ICMPv6 socket on `iface`, sending with hop limit 255 as neighbour
/// discovery requires, and member of all-routers to hear solicitations.
pub fn bind(iface: &str) -> io::Result<(UdpSocket, u32)> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    let index = rustix::net::netdevice::name_to_index(&s, iface)?;
    s.bind_device(Some(iface.as_bytes()))?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_multicast_loop_v6(false)?;
    s.set_multicast_if_v6(index)?;
    s.join_multicast_v6(&ALL_ROUTERS, index)?;
    s.set_nonblocking(true)?;
    let std_sock: std::net::UdpSocket = s.into();
    Ok((UdpSocket::from_std(std_sock)?, index))
}

/// Advertises on `iface` until the future is dropped.
pub async fn serve(iface: String, sock: UdpSocket, index: u32) {
    let to = SocketAddrV6::new(ALL_NODES, 0, 0, index);
    let ra = advertisement();
    let mut buf = [0u8; 1500];
    let mut tick = tokio::time::interval(INTERVAL);
    let mut warned = false;
    loop {
        let send = tokio::select! {
            _ = tick.tick() => true,
            r = sock.recv_from(&mut buf) => matches!(r, Ok((n, _)) if is_solicitation(&buf[..n])),
        };
        if !send {
            continue;
        }
        match sock.send_to(&ra, to).await {
            Ok(_) => warned = false,
            // No link-local address yet (the link has no carrier): later.
            Err(e) if !warned => {
                tracing::debug!(iface, error = %e, "cannot send a router advertisement yet");
                warned = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_no_router() {
        let ra = advertisement();
        assert_eq!(ra[0], 134);
        assert_eq!(&ra[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(ra[5], 0, "no managed/other flags: no DHCPv6 wait either");
    }

    #[test]
    fn recognises_solicitations() {
        assert!(is_solicitation(&[133, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_solicitation(&[134, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_solicitation(&[133, 0, 0]));
        assert!(!is_solicitation(&[]));
    }
}
