//! Marketo REST answers (lead pages, lead-change/activity pages, export status) through the
//! connector's decoding and the core mapping (`LeadRecord`, `qualify`).
//!
//! Properties: nothing panics; a `LeadRecord` deserializes from every valid JSON value (bad
//! records are `Err` values, never a failed page); qualification keeps the Marketo id.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use salesync_core::mapping::LeadRecord;
use salesync_marketo::fuzzing::{Decoded, decode_activity_page, decode_export_status, decode_lead_page};

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) if *s >= 0xF0 => (400 + u16::from(*s - 0xF0) * 10, rest),
        Some((_, rest)) => (200, rest),
        None => return,
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();

    if let Decoded::Records(leads) = decode_lead_page(status, body) {
        for LeadRecord(lead) in leads {
            if let Ok(lead) = lead {
                let id = lead.id;
                assert!(id > 0);
                assert_eq!(lead.qualify(now).marketo_id(), id);
            }
        }
    }
    if let Decoded::Records(acts) = decode_activity_page(status, body) {
        for a in acts {
            assert!(!a.guid.is_empty());
        }
    }
    let _ = decode_export_status(status, body);

    // One record on its own, and as the only record of a page: never an error for valid JSON
    // (a bad record is an `Err` value, it never fails its page). `Value` is the validity check:
    // it rejects invalid UTF-8 and lone surrogate escapes, as the lead reader does.
    if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        let record = serde_json::from_slice::<LeadRecord>(body);
        let LeadRecord(lead) = record.expect("a LeadRecord reads from any JSON value");
        if let Ok(lead) = lead {
            let id = lead.id;
            assert_eq!(lead.qualify(now).marketo_id(), id);
        }
        let mut page = br#"{"requestId":"x#1","success":true,"result":["#.to_vec();
        page.extend_from_slice(body);
        page.extend_from_slice(b"]}");
        match decode_lead_page(200, &page) {
            Decoded::Records(r) => assert_eq!(r.len(), 1),
            other => panic!("one valid JSON record failed its page: {other:?}"),
        }
    }
});
