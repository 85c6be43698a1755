//! Fuzz target: any bytes, read as a qcow2 file, give an error or a plan whose extents stay
//! inside the image's virtual size and the file; never a panic or an unbounded allocation.
#![no_main]
use siderite::agent::qcow2;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let read_at = |offset: u64, len: usize| {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        Ok(data[start..start.saturating_add(len).min(data.len())].to_vec())
    };
    if let Ok(plan) = qcow2::plan(1 << 30, read_at) {
        for extent in &plan.data {
            assert!(extent.disk_offset + extent.len <= plan.size);
        }
        for (offset, len) in &plan.zeros {
            assert!(offset + len <= plan.size);
        }
    }
});
