//! Inbound activity JSON -> `Activity`, then mention stripping and tenant lookup.
#![no_main]

use chatwarden::botframework::activity::Activity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(activity) = serde_json::from_slice::<Activity>(data) {
        let text = activity.text_without_bot_mention();
        std::hint::black_box(text);
        let tenant = activity.tenant_id();
        std::hint::black_box(tenant);
    }
});
