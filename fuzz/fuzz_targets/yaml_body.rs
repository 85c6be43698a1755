//! Fuzz target: YAML request bodies (`application/yaml`, apply patches) never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = siderite::apiserver::http::parse_yaml(data);
});
