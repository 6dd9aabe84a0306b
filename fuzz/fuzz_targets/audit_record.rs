//! Raw audit record JSON -> `AuditRecord`, its parties and members, and the default detection rules.
#![no_main]

use chatwarden::audit::detection::DetectionRules;
use chatwarden::audit::record::AuditRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(record) = AuditRecord::parse(value) {
        std::hint::black_box(record.external_parties());
        std::hint::black_box(record.internal_members());
        std::hint::black_box(DetectionRules::default().evaluate(&record));
    }
});
