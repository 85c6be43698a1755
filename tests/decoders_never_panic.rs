//! The decoders of untrusted input (protobuf bodies, request paths, selectors, JSONPath, YAML)
//! return errors, never panic, on random and mutated input. A deterministic stand-in for the
//! cargo-fuzz targets in `fuzz/`, so every CI run exercises them.

use siderite::apiserver::{http, jsonpath, protobuf, request, selector};

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
