//! Fuzzes everything the server and the client decode from the wire:
//! `cargo +nightly fuzz run decode_message` (from registry/protocol/).
//!
//! Invariants: decoding never panics; a decoded request re-encodes and decodes to the same value; an
//! undecodable frame always yields an error response that itself encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use harness_protocol::wire::{self, Outcome, ServerMessage};

fuzz_target!(|data: &[u8]| {
    match wire::decode_request(data) {
        Ok(req) => {
            let text = serde_json::to_string(&req).expect("a decoded request encodes");
            let again = wire::decode_request(text.as_bytes()).expect("and decodes again");
            assert_eq!(again.id, req.id);
            assert_eq!(again.method, req.method);
        }
        Err(resp) => {
            assert!(matches!(resp.outcome, Outcome::Error(_)));
            serde_json::to_string(&*resp).expect("error responses encode");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ServerMessage::decode(text);
        let _ = serde_json::from_str::<wire::SubscribeParams>(text);
        let _ = serde_json::from_str::<wire::UpdateParams>(text);
        let _ = serde_json::from_str::<harness_protocol::ServiceEntry>(text);
    }
});
