//! Differential: one lead given as a JSON object of strings (REST) and as text fields (a bulk
//! CSV row) maps to the same `MarketoLead`, or fails on the same field.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use salesync_core::mapping::{LeadRecord, MarketoLead};

const NAMES: &[&str] = &[
    "id",
    "firstName",
    "lastName",
    "email",
    "company",
    "title",
    "phone",
    "sfdcType",
    "sfdcLeadOwnerId",
    "sfdcContactId",
    "sfdcLeadId",
    "sfdcAccountId",
    "sfdcOpptyId",
    "updatedAt",
    "createdAt",
    "linkedInProfileURL",
    "leadSource",
    "unknownField",
];

const SAMPLES: &[&str] = &[
    "0055g00000AbCdE",
    "0055g00000AbCdEAAZ",
    "00Q5g00000AbCdEEAV",
    "Lead",
    " Lead",
    "contact ",
    "2026-01-16T23:32:19Z",
    "2026-01-16T23:32:19+0000",
    " 2026-01-16 23:32:19 ",
    "12",
    " 7 ",
    "-3",
    "",
    " ",
];

#[derive(Debug, Arbitrary)]
struct Field {
    name: u8,
    sample: Option<u8>,
    text: String,
}

fuzz_target!(|fields: Vec<Field>| {
    let pairs: Vec<(&str, String)> = fields
        .iter()
        .map(|f| {
            let name = NAMES[usize::from(f.name) % NAMES.len()];
            let value = match f.sample {
                Some(i) => SAMPLES[usize::from(i) % SAMPLES.len()].to_string(),
                None => f.text.clone(),
            };
            (name, value)
        })
        // The literal `null` means absent in CSV only.
        .filter(|(_, v)| v != "null")
        .collect();
    let mut obj = serde_json::Map::new();
    for (n, v) in &pairs {
        // Later duplicates win in both readers.
        obj.remove(*n);
        obj.insert((*n).to_string(), serde_json::Value::String(v.clone()));
    }
    let json = serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap();
    let LeadRecord(from_json) = serde_json::from_slice::<LeadRecord>(&json).unwrap();
    let from_text = MarketoLead::from_text_fields(pairs.iter().map(|(n, v)| (*n, v.as_str())));
    match (&from_json, &from_text) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!((a.record_id, &a.field), (b.record_id, &b.field), "{a} / {b}"),
        _ => panic!("JSON and text readings differ: {from_json:?} vs {from_text:?}"),
    }
});
