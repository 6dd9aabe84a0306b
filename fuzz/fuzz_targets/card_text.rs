//! `cards::plain` on arbitrary text: the output must carry no markdown link, emphasis, scheme
//! separator or control character.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let out = chatwarden::cards::plain(&text);
    assert!(!out.contains("]("), "markdown link survived: {text:?} -> {out:?}");
    assert!(!out.contains("**"), "emphasis survived: {text:?} -> {out:?}");
    assert!(!out.contains("://"), "scheme separator survived: {text:?} -> {out:?}");
    assert!(!out.chars().any(char::is_control), "control character survived: {text:?} -> {out:?}");
});
