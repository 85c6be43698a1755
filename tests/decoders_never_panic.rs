//! The decoders of untrusted input (protobuf bodies, request paths, selectors, JSONPath, YAML,
//! IPMI datagrams from BMCs) return errors, never panic, on random and mutated input. A deterministic stand-in for the
//! cargo-fuzz targets in `fuzz/`, so every CI run exercises them.

use siderite::apiserver::{http, jsonpath, protobuf, request, selector};
use siderite::power::ipmi::crypto::{self, CipherSuite, Exchange};
use siderite::power::ipmi::session::{Config, Event, Session};
use siderite::power::ipmi::wire::{self, Privilege};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A mutation of `seed`: flipped, inserted and deleted bytes, or a random prefix.
    fn mutate(&mut self, seed: &[u8], alphabet: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..=self.next() % 4 {
            let pos = if v.is_empty() {
                0
            } else {
                (self.next() as usize) % v.len()
            };
            let byte = alphabet[(self.next() as usize) % alphabet.len()];
            match self.next() % 4 {
                0 if !v.is_empty() => v[pos] = byte,
                1 => v.insert(pos, byte),
                2 if !v.is_empty() => {
                    v.remove(pos);
                }
                _ => v.truncate(pos),
            }
        }
        v
    }
}

const ROUNDS: usize = 20_000;

fn all_bytes() -> Vec<u8> {
    (0..=255).collect()
}

#[test]
fn protobuf_bodies_never_panic() {
    // A valid `kubectl create secret generic s --from-literal=user=admin` body as the seed.
    let seed: &[u8] = concat!(
        "k8s\x00",
        "\x0a\x0c\x0a\x02v1\x12\x06Secret",
        "\x12\x1c",
        "\x0a\x03\x0a\x01s",
        "\x12\x0d\x0a\x04user\x12\x05admin",
        "\x1a\x06Opaque",
        "\x1a\x00\x22\x00"
    )
    .as_bytes();
    let decoded = protobuf::decode(seed).expect("the seed itself decodes");
    assert_eq!(decoded["data"]["user"], "YWRtaW4=");
    let mut rng = Rng(0x5eed_0001);
    let alphabet = all_bytes();
    for _ in 0..ROUNDS {
        let input = rng.mutate(seed, &alphabet);
        let _ = protobuf::decode(&input);
    }
}

#[test]
fn request_paths_and_queries_never_panic() {
    let seeds = [
        "/apis/metal.sidero.dev/v1alpha2/servers?watch=1&labelSelector=rack%3Da",
        "/api/v1/namespaces/default/configmaps/x/status",
        "/api/v1/watch/namespaces/a/secrets",
    ];
    let alphabet = b"/?&=%.-_azAZ09 \xff";
    let mut rng = Rng(0x5eed_0002);
    for i in 0..ROUNDS {
        let input = rng.mutate(seeds[i % seeds.len()].as_bytes(), alphabet);
        let text = String::from_utf8_lossy(&input);
        let (path, query) = text.split_once('?').unwrap_or((&text, ""));
        let _ = request::route(path);
        let _ = request::Query::parse(Some(query)).flag("watch");
    }
}

#[test]
fn selectors_never_panic() {
    let seeds = [
        "rack in (rack-a,rack-b),!cordoned,env!=prod",
        "hardware.siderite.dev/cores>8",
        "metadata.name=x,metadata.namespace!=y",
    ];
    let alphabet = b"()!=,<> ainotexs-_./";
    let mut rng = Rng(0x5eed_0003);
    for i in 0..ROUNDS {
        let input = rng.mutate(seeds[i % seeds.len()].as_bytes(), alphabet);
        let text = String::from_utf8_lossy(&input);
        if let Ok(s) = selector::parse_label_selector(&text) {
            let _ = s.matches(&Default::default());
        }
        let _ = selector::parse_field_selector(&text);
    }
}

#[test]
fn jsonpaths_never_panic() {
    let seeds = [
        ".status.conditions[?(@.type==\"Ready\")].status",
        ".metadata.labels.cluster\\.x-k8s\\.io/cluster-name",
        ".spec.hardware.compute.processors[*].productName",
        ".a[1:3:2]..b",
    ];
    let alphabet = b".[]()?@=!\"'*:\\-0123abc ";
    let doc = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]},
                                 "a": [{"b": 1}, {"b": [2, 3]}, 4]});
    let mut rng = Rng(0x5eed_0004);
    for i in 0..ROUNDS {
        let input = rng.mutate(seeds[i % seeds.len()].as_bytes(), alphabet);
        if let Ok(p) = jsonpath::parse(&String::from_utf8_lossy(&input)) {
            let _ = p.eval(&doc);
        }
    }
}

#[test]
fn yaml_bodies_never_panic() {
    let seed = b"apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata: {name: a}\nspec:\n  qualifiers:\n    cpu: [{manufacturer: AMD, version: \"EPYC.*\"}]\n  selector: {matchLabels: {rack: a}}\n";
    assert!(http::parse_yaml(seed).is_ok(), "the seed itself parses");
    let alphabet = b":-{}[],\"' \n\t&*!|>#%@`azAZ09";
    let mut rng = Rng(0x5eed_0005);
    for _ in 0..ROUNDS / 4 {
        let input = rng.mutate(seed, alphabet);
        let _ = http::parse_yaml(&input);
    }
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn ipmi_datagrams_never_panic() {
    // Answers BMCs sent in recorded sessions (tests/fixtures/ipmi/): an Open Session
    // Response, RAKP 2 and RAKP 4 (suite 17), and an encrypted, authenticated IPMI response
    // from ipmi_sim (suite 3).
    let open = hex(
        "0600ff0706110000000000000000240000000400a4a3a2a0eeffc00b000000080300000001000008040000000200000801000000",
    );
    let rakp2 = hex(
        "0600ff0706130000000000000000480000000000a4a3a2a0101112131415161718191a1b1c1d1e1fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf67ae1487d7ad80c5fcd42ce488e15bb98bd7ed0476d5d0daadfa348179cfb2b6",
    );
    let rakp4 =
        hex("0600ff0706150000000000000000180000000000a4a3a2a06e5615730bc12c55cce0b1d01fcfc2a7");
    let response = hex(
        "0600ff07 06c0a4a3a2a0 01000000 2000 69c34e4991eee1c5d8183c9fd9bf3d97
         5b4a8addfbfcff6f6f5020e99bc4cc64 ffff 02 07 fb19256da5d831e366b878ab",
    );
    // ipmi_sim's session keys for that response.
    let keys = Exchange {
        suite: CipherSuite::Suite3,
        user_key: crypto::key20(b"secret"),
        console_session_id: 0xa0a2a3a4,
        bmc_session_id: 0x0584,
        console_random: hex("ada3af39d852868660 89b1cb0d5213fb").try_into().unwrap(),
        bmc_random: hex("1582dbebd94fc4a65f1816235e4b93d3").try_into().unwrap(),
        bmc_guid: hex("a123456789abcdefa123456789abcdef").try_into().unwrap(),
        role: 0x14,
        user_name: b"admin",
    }
    .keys();
    let datagram = wire::decode_datagram(&response, 12).expect("the seed decodes");
    let integrity = datagram.integrity.expect("authenticated");
    assert!(crypto::same_mac(
        integrity.auth_code,
        &crypto::auth_code(CipherSuite::Suite3, &keys, integrity.covered)
    ));
    let plain = crypto::decrypt(&keys, datagram.payload).expect("the seed decrypts");
    assert_eq!(
        wire::ResponseMessage::decode(&plain)
            .expect("a response")
            .cmd,
        0x3b
    );
    let session = || {
        let mut session = Session::new(
            Config {
                user_name: b"admin".to_vec(),
                user_key: crypto::key20(b"secret"),
                suite: CipherSuite::Suite17,
                privilege: Privilege::Operator,
            },
            0xa0a2a3a4,
            [7; 16],
        );
        session.start();
        session
    };
    // The recorded Open Session Response moves a session on to RAKP 1.
    let mut opened = session();
    assert!(matches!(opened.handle(&open, [0; 16]), Ok(Event::Send(_))));

    let seeds = [open, rakp2, rakp4, response];
    let alphabet = all_bytes();
    let mut rng = Rng(0x5eed_0006);
    for i in 0..ROUNDS {
        let input = rng.mutate(&seeds[i % seeds.len()], &alphabet);
        for auth_code_len in [0, 12, 16] {
            if let Ok(d) = wire::decode_datagram(&input, auth_code_len) {
                let _ = wire::OpenSessionResponse::decode(d.payload);
                let _ = wire::Rakp2::decode(d.payload);
                let _ = wire::Rakp4::decode(d.payload);
                if let Some(integrity) = d.integrity {
                    let _ = crypto::auth_code(CipherSuite::Suite3, &keys, integrity.covered);
                }
                if let Ok(plain) = crypto::decrypt(&keys, d.payload) {
                    let _ = wire::ResponseMessage::decode(&plain);
                }
            }
        }
        let _ = wire::ResponseMessage::decode(&input);
        // A fresh session, and one past its Open Session Response.
        let _ = session().handle(&input, [0; 16]);
        let mut after_open = session();
        let _ = after_open.handle(&seeds[0], [0; 16]);
        let _ = after_open.handle(&input, [0; 16]);
    }
}
