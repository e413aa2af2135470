//! The pooler's frontend decoder on arbitrary client bytes: startup packet, message framing,
//! the SQL reader and the prepared-statement rewriter must never panic, whatever arrives.
//!
//! `cargo fuzz run pool_frontend -s none` (from `appliance/`); CI runs it for a bounded time.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gatehouse::pool::decode_client_bytes(data);
});
