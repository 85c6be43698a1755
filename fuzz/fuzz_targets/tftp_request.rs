//! Fuzz target: TFTP datagrams never panic the decoder, re-encode to the same packet, and read
//! requests never panic path resolution, option negotiation or a transfer's first steps.
#![no_main]
use siderite::proto::tftp::{self, Limits, Packet, Transfer};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::decode(data) else {
        return;
    };
    // Decoding normalizes (lowercase option names, canonical mode, no padding), so one more
    // encode/decode must be a fixed point.
    assert_eq!(Packet::decode(&packet.to_bytes()), Ok(packet.clone()));
    if let Packet::Rrq(request) = packet {
        let _ = tftp::resolve(&request.filename);
        // The input doubles as the file, so its length drives the block arithmetic.
        let limits = Limits {
            max_blksize: 1468,
            max_windowsize: 8,
            ..Limits::default()
        };
        let file_len = data.len() as u64;
        let negotiated = tftp::negotiate(&request.options, file_len, &limits);
        assert!(negotiated.blksize >= tftp::MIN_BLKSIZE && negotiated.blksize <= 1468);
        assert!(negotiated.windowsize >= 1 && negotiated.windowsize <= 8);
        if let Ok(mut transfer) = Transfer::new(&request, file_len, &limits) {
            let now = std::time::Instant::now();
            let _ = transfer.start(now, data);
            let _ = transfer.on_packet(data, now, data);
            let _ = transfer.on_packet(&[0, 4, 0, 0], now, data);
            let _ = transfer.on_packet(&[0, 4, 0, 1], now, data);
            if let Some(deadline) = transfer.deadline() {
                let _ = transfer.on_timeout(deadline, data);
            }
        }
    }
});
