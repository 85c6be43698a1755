//! Fuzz target: label and field selector strings never panic their parsers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(selector) = siderite::apiserver::selector::parse_label_selector(text) {
            let _ = selector.matches(&Default::default());
        }
        let _ = siderite::apiserver::selector::parse_field_selector(text);
    }
});
