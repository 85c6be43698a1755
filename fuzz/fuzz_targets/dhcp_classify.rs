//! Fuzz target: ProxyDHCP's decoder of untrusted datagrams never panics, on either port, and
//! neither does deciding the reply to whatever it accepts.
#![no_main]
use siderite::proto::dhcp::{Port, ProxyConfig, classify, respond};
use std::net::Ipv4Addr;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let cfg = ProxyConfig {
        server_ip: Ipv4Addr::new(10, 77, 0, 2),
        http_base: "http://10.77.0.2:8081".to_string(),
        arm64_available: true,
    };
    for port in [Port::Dhcp, Port::PxeBootServer] {
        if let Ok(request) = classify(data, port) {
            let _ = respond(&request, &cfg);
        }
    }
});
