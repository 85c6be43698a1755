//! Tidy checks over the source tree: the layering rules of ARCHITECTURE.md (pure modules do no
//! I/O), a `//!` line atop every file, and no `unwrap()` outside tests.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        // `file_type` does not follow symlinks: the recorded /sys fixtures under
        // tests/fixtures are full of links that loop back up the tree.
        if entry.file_type().unwrap().is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The part of a file before its `#[cfg(test)]` module.
fn non_test_code(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

/// Modules that must never touch sockets, files, clocks or the async runtime.
const PURE: &[&str] = &[
    "api",
    "policy",
    "proto",
    "apiserver/request.rs",
    "apiserver/protobuf.rs",
    "apiserver/status.rs",
    "apiserver/resources.rs",
    "apiserver/openapi.rs",
    "apiserver/meta.rs",
    "apiserver/builtin.rs",
    "apiserver/schema.rs",
    "apiserver/apply.rs",
    "apiserver/selector.rs",
    "apiserver/jsonpath.rs",
    "apiserver/table.rs",
    "power/ipmi/wire.rs",
    "power/ipmi/crypto.rs",
    "power/ipmi/command.rs",
    "power/ipmi/session.rs",
];

const IO_MARKERS: &[&str] = &[
    "tokio",
    "hyper",
    // std::net's address types are plain values; its sockets are I/O.
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "std::fs",
    "std::time::SystemTime",
    "Instant::now",
    "Timestamp::now",
    "rusqlite",
    "std::process",
];

#[test]
fn pure_modules_do_no_io() {
    let mut violations = Vec::new();
    for module in PURE {
        let path = src().join(module);
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else if path.exists() {
            files.push(path);
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for marker in IO_MARKERS {
                if non_test_code(&text).contains(marker) {
                    violations.push(format!("{} uses {marker}", file.display()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "pure modules doing I/O:\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_source_file_starts_with_a_doc_line() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"),
        &mut files,
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` first line:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_unwrap_outside_tests() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in non_test_code(&text).lines().enumerate() {
            if line.contains(".unwrap()") && !line.trim_start().starts_with("//") {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "unwrap() outside tests (use ? or expect with a reason):\n{}",
        found.join("\n")
    );
}
