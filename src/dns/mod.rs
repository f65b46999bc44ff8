//! Authoritative DNS for the cluster, answered from the live inventory.
//!
//! The zone (`zone.rs`) is a pure index of one snapshot; [`handle`] is the
//! whole decode → answer → encode path as one function of bytes (the fuzz
//! target and the tests call it), using hickory-proto for the wire format;
//! names outside the zones come back as [`Handled::Forward`], which the
//! server (`server.rs`) hands to hickory-resolver (cache, timeouts) only for
//! clients in the served networks. Response-rate limiting (`rrl.rs`) sits
//! in the server, between the answer and the socket.

pub mod rrl;
pub mod server;
pub mod settings;
pub mod zone;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use zone::{Answer, Arrival, Data, QType, Question, Rcode, Rr, Zone};

/// The largest UDP answer we send, whatever the client offers (the DNS
/// flag day 2020 figure: no IP fragmentation on common paths).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// A UDP answer without EDNS (RFC 1035).
pub const PLAIN_UDP_PAYLOAD: u16 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A question to forward, with what its answer needs.
#[derive(Debug, Clone)]
pub struct Forward {
    pub request: Message,
    pub name: Name,
    pub qtype: RecordType,
    pub limit: u16,
}

#[derive(Debug)]
pub enum Handled {
    /// Bytes to send back.
    Reply(Vec<u8>, &'static str),
    /// Not ours, and this client may recurse.
    Forward(Box<Forward>),
    /// Not even an answerable query: say nothing.
    Drop(&'static str),
}

fn qtype(t: RecordType) -> QType {
    match t {
        RecordType::A => QType::A,
        RecordType::AAAA => QType::Aaaa,
        RecordType::CNAME => QType::Cname,
        RecordType::PTR => QType::Ptr,
        RecordType::NS => QType::Ns,
        RecordType::SOA => QType::Soa,
        RecordType::TXT => QType::Txt,
        RecordType::ANY => QType::Any,
        other => QType::Other(u16::from(other)),
    }
}

fn fqdn(n: &str) -> Option<Name> {
    Name::from_ascii(format!("{n}.")).ok()
}

/// A zone record on the wire; `owner` is the question's name when the
/// record is the question's (its case as the client sent it, 0x20).
fn record(rr: &Rr, owner: Option<&Name>) -> Option<Record> {
    let name = match owner {
        Some(n) => n.clone(),
        None => fqdn(&rr.name)?,
    };
    let rdata = match &rr.data {
        Data::A(a) => RData::A(A(*a)),
        Data::Aaaa(a) => RData::AAAA(AAAA(*a)),
        Data::Cname(n) => RData::CNAME(CNAME(fqdn(n)?)),
        Data::Ptr(n) => RData::PTR(PTR(fqdn(n)?)),
        Data::Ns(n) => RData::NS(NS(fqdn(n)?)),
        Data::Soa(s) => {
            let (refresh, retry, expire) = s.timers();
            RData::SOA(SOA::new(
                fqdn(&s.mname)?,
                fqdn(&s.rname)?,
                s.serial,
                refresh,
                retry,
                expire,
                s.minimum,
            ))
        }
        Data::Txt(t) => RData::TXT(TXT::new(vec![t.clone()])),
    };
    Some(Record::from_rdata(name, rr.ttl, rdata))
}

/// The payload size this transport allows for a reply to `req`.
fn limit(req: &Message, t: Transport) -> u16 {
    match (t, &req.edns) {
        (Transport::Tcp, _) => u16::MAX,
        (Transport::Udp, None) => PLAIN_UDP_PAYLOAD,
        (Transport::Udp, Some(e)) => e.max_payload().clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
    }
}

/// A reply to `req` with its header copied as RFC 1035 says, our EDNS when
/// the client sent EDNS, and truncation (TC, answers dropped) when it does
/// not fit `max`.
pub fn respond(
    req: &Message,
    rcode: ResponseCode,
    answers: Vec<Record>,
    authority: Vec<Record>,
    authoritative: bool,
    recursion_available: bool,
    max: u16,
) -> Option<Vec<u8>> {
    let mut m = Message::response(req.id, req.op_code);
    m.metadata.recursion_desired = req.recursion_desired;
    m.metadata.checking_disabled = req.checking_disabled;
    m.metadata.authoritative = authoritative;
    m.metadata.recursion_available = recursion_available;
    m.metadata.response_code = rcode;
    m.queries = req.queries.clone();
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(MAX_UDP_PAYLOAD);
        m.edns = Some(e);
    }
    m.answers = answers;
    m.authorities = authority;
    let bytes = m.to_vec().ok()?;
    if bytes.len() <= usize::from(max) {
        return Some(bytes);
    }
    m.truncate().to_vec().ok()
}

/// A bare error reply from the raw header of a message we could not
/// decode: only for something that looks like a query.
fn formerr_from_header(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        return None;
    }
    let opcode = (bytes[2] >> 3) & 0x0f;
    let mut out = vec![0u8; 12];
    out[0] = bytes[0];
    out[1] = bytes[1];
    out[2] = 0x80 | (opcode << 3) | (bytes[2] & 0x01);
    out[3] = ResponseCode::FormErr.low();
    Some(out)
}

/// Decodes `bytes`, answers from `zone` and encodes. `recursion` says
/// whether this client may have other names forwarded.
pub fn handle(
    bytes: &[u8],
    zone: &Zone,
    at: &Arrival,
    recursion: bool,
    transport: Transport,
) -> Handled {
    let req = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => {
            return match formerr_from_header(bytes) {
                Some(b) => Handled::Reply(b, "malformed query"),
                None => Handled::Drop("malformed packet"),
            };
        }
    };
    if req.message_type != MessageType::Query {
        return Handled::Drop("not a query");
    }
    let max = limit(&req, transport);
    let err = |code: ResponseCode, why: &'static str| match respond(
        &req,
        code,
        Vec::new(),
        Vec::new(),
        false,
        recursion,
        max,
    ) {
        Some(b) => Handled::Reply(b, why),
        None => Handled::Drop("cannot encode"),
    };
    if req.op_code != OpCode::Query {
        return err(ResponseCode::NotImp, "opcode not implemented");
    }
    if let Some(e) = &req.edns
        && e.version() > 0
    {
        return err(ResponseCode::BADVERS, "EDNS version not supported");
    }
    let [q]: &[Query; 1] = match req.queries.as_slice().try_into() {
        Ok(q) => q,
        Err(_) => return err(ResponseCode::FormErr, "not exactly one question"),
    };
    if !req.answers.is_empty() || !req.authorities.is_empty() {
        return err(ResponseCode::FormErr, "records in a query");
    }
    if matches!(
        q.query_type(),
        RecordType::AXFR | RecordType::IXFR | RecordType::OPT
    ) {
        return err(ResponseCode::Refused, "zone transfer or meta type");
    }
    let name = q.name().to_ascii();
    let question = Question {
        name,
        qtype: qtype(q.query_type()),
    };
    let answer = if q.query_class() == DNSClass::IN {
        zone.answer(&question, at)
    } else {
        Answer::Elsewhere
    };
    match answer {
        Answer::Zone {
            rcode,
            answers,
            authority,
        } => {
            let lname = question.name.trim_end_matches('.').to_ascii_lowercase();
            let owner = |rr: &Rr| (rr.name == lname).then(|| q.name());
            let answers = answers.iter().filter_map(|r| record(r, owner(r))).collect();
            let authority = authority.iter().filter_map(|r| record(r, None)).collect();
            let code = match rcode {
                Rcode::NoError => ResponseCode::NoError,
                Rcode::NxDomain => ResponseCode::NXDomain,
            };
            match respond(&req, code, answers, authority, true, recursion, max) {
                Some(b) => Handled::Reply(b, "authoritative"),
                None => Handled::Drop("cannot encode"),
            }
        }
        Answer::Elsewhere if recursion && q.query_class() == DNSClass::IN => {
            Handled::Forward(Box::new(Forward {
                name: q.name().clone(),
                qtype: q.query_type(),
                request: req,
                limit: max,
            }))
        }
        Answer::Elsewhere => err(ResponseCode::Refused, "not ours, no recursion"),
    }
}

/// The zone as a listing, for operators.
pub fn listing(zone: &Zone, at: &Arrival) -> Vec<Rr> {
    zone.records(at)
}

#[cfg(test)]
mod tests;
