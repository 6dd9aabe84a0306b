//! `Authorization` header pre-checks: header value shape, JWT segments, header and unverified issuer.
#![no_main]

use chatwarden::botframework::auth::precheck;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    std::hint::black_box(precheck(&text).is_ok());
    std::hint::black_box(precheck(&format!("Bearer {text}")).is_ok());
});
