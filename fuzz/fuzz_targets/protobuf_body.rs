//! Fuzz target: protobuf request bodies (`application/vnd.kubernetes.protobuf`) never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = siderite::apiserver::protobuf::decode(data);
});
