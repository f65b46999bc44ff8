//! The wire path as a function of bytes: header rules, EDNS, truncation,
//! refusal, and arbitrary bytes never panicking.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use proptest::prelude::*;

use super::settings::Settings;
use super::zone::{Arrival, Zone};
use super::{Handled, Transport, handle};
use crate::config::Config;
use crate::inventory::Model;
use crate::inventory::model::{Component, EthernetInterface, IpAddressMapping};

fn zone(n: usize) -> Zone {
    let c = Config::parse(
        "[[dhcp.subnets]]\ncidr = \"10.0.0.0/16\"\ndomain = \"cluster\"\n",
        "t",
    )
    .unwrap();
    let s = Settings::from_config(&c).unwrap();
    let mut m = Model::default();
    for i in 0..n {
        let id = format!("x1000c0s{i}b0n0");
        let mut comp = Component::new(id.clone(), "Node".into());
        comp.nid = Some(i as i64 + 1);
        m.components.insert(id.clone(), Arc::new(comp));
        let mac = format!("52540000{i:04x}");
        m.interfaces.insert(
            mac.clone(),
            Arc::new(EthernetInterface {
                id: mac.clone(),
                description: String::new(),
                mac_address: mac,
                last_update: String::new(),
                component_id: id,
                kind: String::new(),
                ip_addresses: vec![IpAddressMapping {
                    ip_address: format!("10.0.{}.{}", i / 250, i % 250 + 1),
                    network: String::new(),
                }],
            }),
        );
    }
    // Many addresses under one name: more than 512 bytes of answer.
    let mut big = Component::new("x9000c0s0b0n0".into(), "Node".into());
    big.nid = Some(9000);
    m.components.insert(big.id.clone(), Arc::new(big));
    m.interfaces.insert(
        "big".into(),
        Arc::new(EthernetInterface {
            id: "big".into(),
            description: String::new(),
            mac_address: "big".into(),
            last_update: String::new(),
            component_id: "x9000c0s0b0n0".into(),
            kind: String::new(),
            ip_addresses: (1..=60)
                .map(|i| IpAddressMapping {
                    ip_address: format!("10.0.200.{i}"),
                    network: String::new(),
                })
                .collect(),
        }),
    );
    Zone::build(&m, 3, &s)
}

fn at() -> Arrival {
    Arrival {
        local: Some("10.0.255.254".parse().unwrap()),
        interface: vec![],
    }
}

fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn reply(h: Handled) -> Message {
    match h {
        Handled::Reply(b, _) => Message::from_vec(&b).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn answers_carry_the_header_rules() {
    let z = zone(3);
    let r = reply(handle(
        &query("Op0002.cluster.", RecordType::A, None),
        &z,
        &at(),
        false,
        Transport::Udp,
    ));
    assert_eq!(r.id, 4242);
    assert_eq!(r.message_type, MessageType::Response);
    assert!(r.authoritative && r.recursion_desired && !r.recursion_available);
    assert_eq!(r.response_code, ResponseCode::NoError);
    // The question and the owner name keep the client's case (0x20).
    assert_eq!(r.queries[0].name().to_ascii(), "Op0002.cluster.");
    assert_eq!(r.answers[0].name.to_ascii(), "Op0002.cluster.");
    assert_eq!(
        r.answers[0].data,
        RData::A(hickory_proto::rr::rdata::A("10.0.0.2".parse().unwrap()))
    );
    assert!(r.edns.is_none());
    let nx = reply(handle(
        &query("nope.cluster.", RecordType::A, Some(4096)),
        &z,
        &at(),
        false,
        Transport::Udp,
    ));
    assert_eq!(nx.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(
        nx.edns.as_ref().unwrap().max_payload(),
        super::MAX_UDP_PAYLOAD
    );
}

#[test]
fn large_answers_truncate_over_udp_only() {
    let z = zone(1);
    let q = query("x9000c0s0b0n0.cluster.", RecordType::A, None);
    let udp = reply(handle(&q, &z, &at(), false, Transport::Udp));
    assert!(udp.truncation && udp.answers.is_empty());
    let tcp = reply(handle(&q, &z, &at(), false, Transport::Tcp));
    assert!(!tcp.truncation);
    assert_eq!(tcp.answers.len(), 60);
    // EDNS with room for it: whole.
    let q = query("x9000c0s0b0n0.cluster.", RecordType::A, Some(1232));
    let big = reply(handle(&q, &z, &at(), false, Transport::Udp));
    assert!(!big.truncation);
    assert_eq!(big.answers.len(), 60);
}

#[test]
fn other_names_are_refused_or_forwarded() {
    let z = zone(1);
    let q = query("example.org.", RecordType::A, None);
    let r = reply(handle(&q, &z, &at(), false, Transport::Udp));
    assert_eq!(r.response_code, ResponseCode::Refused);
    assert!(!r.recursion_available);
    match handle(&q, &z, &at(), true, Transport::Udp) {
        Handled::Forward(f) => {
            assert_eq!(f.qtype, RecordType::A);
            assert_eq!(f.limit, 512);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_queries_get_the_right_code() {
    let z = zone(1);
    let mut notify = Message::new(7, MessageType::Query, OpCode::Notify);
    notify.add_query(Query::query(
        Name::from_ascii("cluster.").unwrap(),
        RecordType::SOA,
    ));
    let mut two = Message::new(8, MessageType::Query, OpCode::Query);
    for n in ["a.cluster.", "b.cluster."] {
        two.add_query(Query::query(Name::from_ascii(n).unwrap(), RecordType::A));
    }
    let mut v1 = Message::new(9, MessageType::Query, OpCode::Query);
    v1.add_query(Query::query(
        Name::from_ascii("cluster.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_version(1);
    v1.set_edns(e);
    for (msg, code) in [
        (notify, ResponseCode::NotImp),
        (two, ResponseCode::FormErr),
        (v1, ResponseCode::BADVERS),
    ] {
        let r = reply(handle(
            &msg.to_vec().unwrap(),
            &z,
            &at(),
            false,
            Transport::Udp,
        ));
        // BADVERS and BADSIG share code 16.
        assert_eq!(u16::from(r.response_code), u16::from(code), "{msg:?}");
        assert_eq!(r.id, msg.id);
    }
    let axfr = query("cluster.", RecordType::AXFR, None);
    let r = reply(handle(&axfr, &z, &at(), false, Transport::Tcp));
    assert_eq!(r.response_code, ResponseCode::Refused);
    // A header and garbage: FORMERR; a response or a runt: silence.
    let mut junk = query("cluster.", RecordType::A, None);
    junk.truncate(14);
    let r = reply(handle(&junk, &z, &at(), false, Transport::Udp));
    assert_eq!(r.response_code, ResponseCode::FormErr);
    assert!(matches!(
        handle(&[1, 2, 3], &z, &at(), false, Transport::Udp),
        Handled::Drop(_)
    ));
    let mut resp = query("cluster.", RecordType::A, None);
    resp[2] |= 0x80;
    assert!(matches!(
        handle(&resp, &z, &at(), false, Transport::Udp),
        Handled::Drop(_)
    ));
}

#[test]
fn the_head_is_the_arrival_address() {
    let z = zone(0);
    for local in ["10.0.255.254", "192.168.7.1"] {
        let at = Arrival {
            local: Some(local.parse::<IpAddr>().unwrap()),
            interface: vec![],
        };
        let r = reply(handle(
            &query("openchami.cluster.", RecordType::A, None),
            &z,
            &at,
            false,
            Transport::Udp,
        ));
        assert_eq!(
            r.answers[0].data,
            RData::A(hickory_proto::rr::rdata::A(local.parse().unwrap()))
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let z = zone(2);
        for t in [Transport::Udp, Transport::Tcp] {
            let _ = handle(&bytes, &z, &at(), true, t);
        }
    }

    #[test]
    fn mutated_queries_never_panic(
        flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..8),
        t in prop_oneof![Just(RecordType::A), Just(RecordType::PTR), Just(RecordType::ANY)],
    ) {
        let z = zone(2);
        let mut q = query("1.0.0.10.in-addr.arpa.", t, Some(4096));
        for (i, b) in flips {
            let n = q.len();
            q[i % n] ^= b;
        }
        let _ = handle(&q, &z, &at(), true, Transport::Udp);
    }
}
