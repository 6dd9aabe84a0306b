//! Raw audit record JSON -> `AuditRecord`, its parties and members, and the default detection rules.
#![no_main]

use chatwarden::audit::detection::DetectionRules;
use chatwarden::audit::record::AuditRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(record) = AuditRecord::from_json(text) {
        std::hint::black_box(record.external_parties());
        std::hint::black_box(record.internal_members());
        std::hint::black_box(DetectionRules::default().evaluate(&record));
        // What is stored is what was received, and it reads back to the same record.
        assert_eq!(record.raw_json(), text.trim());
        assert_eq!(AuditRecord::from_json(record.raw_json()).as_ref(), Ok(&record));
    }
});
