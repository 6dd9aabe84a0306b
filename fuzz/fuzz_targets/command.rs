//! Message text (mention already removed) -> typed `Command` or a usage-carrying error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match chatwarden::commands::parse(&text) {
        Ok(command) => {
            std::hint::black_box(format!("{command:?}"));
        }
        Err(error) => {
            std::hint::black_box(error.to_string());
        }
    }
});
