//! Arbitrary bytes as one client connection to a real server (connection loop, dispatch, store on
//! an SQLite file in /dev/shm), delivered in input-chosen chunks, then the client half-closes.
//!
//! Checks, for every input:
//! * nothing panics (libfuzzer-sys aborts on a panic in any task or thread);
//! * the connection ends by itself once the client stopped sending (no hang, no leaked task);
//! * everything the server wrote decodes as HotRod responses and events, when the requests in the
//!   input have distinct message ids (so the answers can be matched);
//! * the server still serves: a fresh connection's PUT then GET round-trips.
#![no_main]

#[path = "../harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| harness::check(data));
