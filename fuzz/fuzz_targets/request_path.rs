//! Fuzz target: request paths and query strings never panic the router.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (path, query) = text.split_once('?').unwrap_or((text, ""));
        let _ = siderite::apiserver::request::route(path);
        let q = siderite::apiserver::request::Query::parse(Some(query));
        let _ = q.flag("watch");
    }
});
