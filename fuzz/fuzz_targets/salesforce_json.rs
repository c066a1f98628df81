//! Salesforce REST answers through the connector's decoding: query pages (raw and as Tasks),
//! error bodies and their classification, sObject Collections results, `Sforce-Limit-Info`.
//!
//! Properties: nothing panics; a page that says more follow carries its `nextRecordsUrl`; a body
//! that is not a JSON object is never a query page.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salesync_salesforce::fuzzing::{decode_collection_results, decode_error, decode_query_page, decode_task_page};

fuzz_target!(|data: &[u8]| {
    let status = match data.first() {
        Some(b) => 400 + u16::from(*b % 200),
        None => return,
    };
    let body = &data[1..];
    match decode_query_page(body) {
        Ok(page) => {
            assert_eq!(page.more, page.next_token.is_some());
            // (serde skips unknown members without checking their UTF-8, so only for text.)
            if std::str::from_utf8(body).is_ok() {
                let fixed = salesync_core::mapping::repair_lone_surrogates(body).unwrap_or_else(|| body.to_vec());
                let v = serde_json::from_slice::<serde_json::Value>(&fixed);
                assert!(matches!(v, Ok(serde_json::Value::Object(_))), "{v:?}");
            }
        }
        Err(e) => assert!(matches!(e, salesync_core::Error::Protocol { .. }), "{e:?}"),
    }
    if let Ok(page) = decode_task_page(body, "Salesync_Activity_Id__c") {
        for t in page.items {
            assert!(t.modified_at.timestamp() != i64::MIN);
        }
    }
    let (err, _) = decode_error(status, body);
    assert!(err.message.chars().count() <= 300 || serde_json::from_slice::<serde_json::Value>(body).is_ok());
    let _ = decode_collection_results(body);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = salesync_salesforce::parse_limit_info(text);
    }
});
