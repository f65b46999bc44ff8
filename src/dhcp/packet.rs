//! Bytes to [`Query`] and [`Reply`] to bytes, with dhcproto.
//!
//! Decoding is strict about what the policy relies on and lenient about the
//! rest: a packet that is not a BOOTREQUEST from an Ethernet client with a
//! magic cookie and a message type is dropped (the reason goes to a debug
//! log), while options this server does not use are never looked at.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{
    self, DhcpOption, DhcpOptions, Flags, HType, Message, MessageType, Opcode, OptionCode,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::leases::Mac;
use super::policy::{Kind, Query, Reply, ReplyKind};

/// A DHCP message is at least this long (RFC 2131 fixed part + cookie).
pub const MIN_LEN: usize = 240;
/// Replies are padded to the BOOTP minimum some old clients insist on.
pub const MIN_REPLY_LEN: usize = 300;

/// A decoded request: the policy's facts and what the reply must echo.
#[derive(Debug, Clone)]
pub struct Request {
    pub query: Query,
    pub msg: Message,
}

/// Why a packet was dropped.
pub type Drop = &'static str;

/// Decodes a client packet, or says why it is not one.
pub fn decode(b: &[u8]) -> Result<Request, Drop> {
    if b.len() < MIN_LEN {
        return Err("truncated packet");
    }
    if b[236..240] != v4::MAGIC {
        return Err("no DHCP magic cookie");
    }
    let clean = sanitize(b)?;
    let msg = Message::decode(&mut Decoder::new(&clean)).map_err(|_| "undecodable packet")?;
    if msg.opcode() != Opcode::BootRequest {
        return Err("not a BOOTREQUEST");
    }
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err("not an Ethernet client");
    }
    let kind = match msg.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => match t {
            MessageType::Discover => Kind::Discover,
            MessageType::Request => Kind::Request,
            MessageType::Decline => Kind::Decline,
            MessageType::Release => Kind::Release,
            MessageType::Inform => Kind::Inform,
            _ => return Err("not a client message type"),
        },
        _ => return Err("no message type (BOOTP or a malformed option)"),
    };
    let mut mac: Mac = [0; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    if mac == [0; 6] || mac[0] & 1 == 1 {
        return Err("zero or multicast client address");
    }
    let opts = msg.opts();
    let requested = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => None,
    };
    let ipxe = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(u)) => is_ipxe_user_class(u),
        _ => false,
    } || opts.contains(OptionCode::Unknown(175));
    let pxe = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(c)) => c.starts_with(b"PXEClient"),
        _ => false,
    };
    let query = Query {
        kind,
        mac,
        ciaddr: msg.ciaddr(),
        giaddr: msg.giaddr(),
        requested,
        server_id,
        arch,
        ipxe,
        pxe,
        secs: msg.secs(),
        bucket: super::balance::bucket(&mac),
    };
    Ok(Request { query, msg })
}

/// The options the policy reads, with the lengths it relies on.
/// dhcproto trusts option lengths in places (debug assertions, a panic on a
/// classless route with a prefix over 32), so only these options, checked
/// here, ever reach it; the rest of a packet is never parsed.
fn sanitize(b: &[u8]) -> Result<Vec<u8>, Drop> {
    let mut out = Vec::with_capacity(b.len().min(600));
    out.extend_from_slice(&b[..MIN_LEN]);
    let mut i = MIN_LEN;
    // A missing End option is tolerated, as most servers do.
    while let Some(&code) = b.get(i) {
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = usize::from(*b.get(i + 1).ok_or("option without a length")?);
        let data = b
            .get(i + 2..i + 2 + len)
            .ok_or("option runs past the end")?;
        let keep = match code {
            53 => (len == 1).then_some(len),
            50 | 54 => (len == 4).then_some(len),
            // A list of architectures; the first one counts.
            93 => (len >= 2 && len.is_multiple_of(2)).then_some(2),
            60 | 77 | 175 | 82 | 61 => Some(len),
            _ => None,
        };
        match (code, keep) {
            (53 | 50 | 54 | 93, None) => return Err("option with a wrong length"),
            (_, Some(n)) => {
                out.push(code);
                out.push(n as u8);
                out.extend_from_slice(&data[..n]);
            }
            (_, None) => {}
        }
        i += 2 + len;
    }
    out.push(255);
    Ok(out)
}

/// Option 77 as iPXE sends it (the raw text `iPXE`), or as RFC 3004
/// length-prefixed entries one of which is `iPXE`.
pub fn is_ipxe_user_class(u: &[u8]) -> bool {
    if u == b"iPXE" {
        return true;
    }
    let mut rest = u;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// iPXE's encapsulated options (175) and its "no ProxyDHCP" flag (176).
const IPXE_ENCAP: u8 = 175;
const IPXE_NO_PXEDHCP: u8 = 176;

/// Encodes `r` as the answer to `req`.
pub fn encode(req: &Request, r: &Reply) -> Result<Vec<u8>, Drop> {
    let m = &req.msg;
    let mut out = Message::new_with_id(
        m.xid(),
        Ipv4Addr::UNSPECIFIED,
        r.yiaddr,
        r.next_server.unwrap_or(Ipv4Addr::UNSPECIFIED),
        m.giaddr(),
        m.chaddr(),
    );
    out.set_opcode(Opcode::BootReply).set_flags(m.flags());
    let mut opts = DhcpOptions::new();
    let t = match r.kind {
        ReplyKind::Offer => MessageType::Offer,
        ReplyKind::Ack => MessageType::Ack,
        ReplyKind::Nak => MessageType::Nak,
    };
    opts.insert(DhcpOption::MessageType(t));
    opts.insert(DhcpOption::ServerIdentifier(r.server_id));
    if r.kind == ReplyKind::Nak {
        out.set_siaddr(Ipv4Addr::UNSPECIFIED);
        if !m.giaddr().is_unspecified() {
            // The relay must broadcast a NAK on the client's segment.
            out.set_flags(Flags::default().set_broadcast());
        }
        if let Some(msg) = r.message {
            opts.insert(DhcpOption::Message(msg.to_string()));
        }
    } else {
        if req.query.kind == Kind::Inform {
            out.set_ciaddr(m.ciaddr());
        }
        if let Some(l) = r.lease_secs {
            opts.insert(DhcpOption::AddressLeaseTime(l));
        }
        if let Some(mask) = r.mask {
            opts.insert(DhcpOption::SubnetMask(mask));
        }
        if !r.routers.is_empty() {
            opts.insert(DhcpOption::Router(r.routers.clone()));
        }
        if !r.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(r.dns.clone()));
        }
        if !r.domain.is_empty() {
            opts.insert(DhcpOption::DomainName(r.domain.clone()));
        }
        if let Some(h) = r
            .hostname
            .as_ref()
            .filter(|h| !h.is_empty() && h.len() <= 255)
        {
            opts.insert(DhcpOption::Hostname(h.clone()));
        }
        if let Some(f) = r.boot_file.as_ref().filter(|f| f.len() <= 255) {
            if f.len() <= 128 {
                out.set_fname(f.as_bytes());
            }
            opts.insert(DhcpOption::BootfileName(f.as_bytes().to_vec()));
            if let Some(ns) = r.next_server {
                opts.insert(DhcpOption::TFTPServerName(ns.to_string().into_bytes()));
            }
            if req.query.ipxe {
                // iPXE's encapsulated option 175.176 "no-pxedhcp": this offer
                // carries everything, so iPXE requests at once instead of
                // waiting 2-3 s for ProxyDHCP offers on every boot.
                opts.insert(DhcpOption::Unknown(dhcproto::v4::UnknownOption::new(
                    OptionCode::Unknown(IPXE_ENCAP),
                    vec![IPXE_NO_PXEDHCP, 1, 1],
                )));
            }
        }
    }
    if r.proxy {
        opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        // PXE_DISCOVERY_CONTROL (6) = 8: boot the file named here, no discovery.
        opts.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
    }
    if let Some(o82) = m.opts().get(OptionCode::RelayAgentInformation) {
        opts.insert(o82.clone());
    }
    out.set_opts(opts);
    let mut buf = Vec::with_capacity(MIN_REPLY_LEN + 64);
    out.encode(&mut Encoder::new(&mut buf))
        .map_err(|_| "reply does not encode")?;
    if buf.len() < MIN_REPLY_LEN {
        buf.resize(MIN_REPLY_LEN, 0);
    }
    Ok(buf)
}

/// Where a reply goes, RFC 2131 §4.1: the relay's server port; the
/// client's address when it has one (renewing, INFORM); broadcast for
/// NAKs and otherwise. Unicast to `yiaddr` before the client has the
/// address would need an ARP entry written for it, which a plain UDP
/// socket cannot do; clients accept the broadcast (RFC 2131 allows it when
/// unicast is not possible).
pub fn destination(req: &Request, r: &Reply) -> SocketAddrV4 {
    let m = &req.msg;
    if !m.giaddr().is_unspecified() {
        return SocketAddrV4::new(m.giaddr(), v4::SERVER_PORT);
    }
    if r.kind != ReplyKind::Nak && !m.ciaddr().is_unspecified() {
        return SocketAddrV4::new(m.ciaddr(), v4::CLIENT_PORT);
    }
    SocketAddrV4::new(Ipv4Addr::BROADCAST, v4::CLIENT_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn discover(mac: Mac) -> Vec<u8> {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        m.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        b
    }

    #[test]
    fn decodes_and_refuses() {
        let mac = [2, 0, 0, 0, 0, 1];
        let ok = discover(mac);
        let r = decode(&ok).unwrap();
        assert_eq!(r.query.kind, Kind::Discover);
        assert_eq!(r.query.mac, mac);
        assert!(r.query.ipxe);
        assert!(decode(&ok[..200]).is_err(), "truncated");
        let mut reply = ok.clone();
        reply[0] = 2;
        assert!(decode(&reply).is_err(), "wrong op");
        let mut hlen = ok.clone();
        hlen[2] = 16;
        assert!(decode(&hlen).is_err(), "wrong hardware length");
        let mut cookie = ok.clone();
        cookie[236] = 0;
        assert!(decode(&cookie).is_err(), "no cookie");
        let mut bootp = ok[..240].to_vec();
        bootp.push(255);
        assert!(decode(&bootp).is_err(), "no message type");
        let mut oversized = ok[..240].to_vec();
        oversized.extend_from_slice(&[53, 200, 1]);
        assert!(decode(&oversized).is_err(), "option longer than the packet");
    }

    #[test]
    fn user_classes() {
        assert!(is_ipxe_user_class(b"iPXE"));
        assert!(is_ipxe_user_class(b"\x04iPXE"));
        assert!(is_ipxe_user_class(b"\x03abc\x04iPXE"));
        assert!(!is_ipxe_user_class(b"\x05iPXE"));
        assert!(!is_ipxe_user_class(b"ipxe"));
        assert!(!is_ipxe_user_class(b""));
    }
}
