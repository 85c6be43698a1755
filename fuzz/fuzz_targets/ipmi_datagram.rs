//! Fuzz target: any bytes, as a datagram from a BMC, give errors or values from every IPMI
//! decoder (RMCP+ datagram, Open Session Response, RAKP 2 and 4, IPMI response, AES payload)
//! and from a session waiting for its Open Session Response; never a panic.
#![no_main]
use siderite::power::ipmi::crypto::{self, CipherSuite, Exchange};
use siderite::power::ipmi::session::{Config, Session};
use siderite::power::ipmi::wire::{self, Privilege};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for auth_code_len in [0, 12, 16] {
        if let Ok(datagram) = wire::decode_datagram(data, auth_code_len) {
            let _ = wire::OpenSessionResponse::decode(datagram.payload);
            let _ = wire::Rakp2::decode(datagram.payload);
            let _ = wire::Rakp4::decode(datagram.payload);
        }
    }
    let _ = wire::OpenSessionRequest::decode(data);
    let _ = wire::Rakp1::decode(data);
    let _ = wire::Rakp3::decode(data);
    let _ = wire::ResponseMessage::decode(data);
    let _ = wire::RequestMessage::decode(data);
    let keys = Exchange {
        suite: CipherSuite::Suite17,
        user_key: crypto::key20(b"fuzz"),
        console_session_id: 1,
        bmc_session_id: 2,
        console_random: [3; 16],
        bmc_random: [4; 16],
        bmc_guid: [5; 16],
        role: 0x13,
        user_name: b"fuzz",
    }
    .keys();
    let _ = crypto::decrypt(&keys, data);
    let mut session = Session::new(
        Config {
            user_name: b"fuzz".to_vec(),
            user_key: crypto::key20(b"fuzz"),
            suite: CipherSuite::Suite3,
            privilege: Privilege::Operator,
        },
        1,
        [0; 16],
    );
    session.start();
    let _ = session.handle(data, [0; 16]);
});
