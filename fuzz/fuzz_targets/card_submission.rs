//! Card button data (Action.Submit), `adaptiveCard/action` invoke values and sign-in proofs.
#![no_main]

use chatwarden::workflow::{CardAction, SignInProof};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    std::hint::black_box(CardAction::from_data(&value));
    std::hint::black_box(CardAction::from_invoke(&value));
    std::hint::black_box(SignInProof::from_value(&value));
});
