//! Fuzz target: JSONPath expressions (printer columns of user-supplied CRDs) never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(path) = siderite::apiserver::jsonpath::parse(text)
    {
        let doc = serde_json::json!({"metadata": {"name": "x", "labels": {"a.b/c": "d"}},
                                     "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let _ = path.eval(&doc);
    }
});
