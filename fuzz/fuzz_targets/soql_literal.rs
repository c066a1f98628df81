//! SOQL literal escaping: any text, escaped by the connector's `Soql` builder, stays one string
//! literal (the statement does not end early or gain clauses) that reads back as the same text,
//! and the Salesforce emulator's SOQL parser finds the record holding that text with `=` and with
//! `LIKE` (contains), and nothing for a different text.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};
use salesync_salesforce::{Condition, LikeMatch, Soql};

const PREFIX: &str = "SELECT Id, LastName FROM Lead WHERE LastName = '";

struct World {
    _rt: tokio::runtime::Runtime,
    emu: SalesforceEmulator,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let emu = rt.block_on(SalesforceEmulator::start(SalesforceConfig::default())).unwrap();
        World { _rt: rt, emu }
    })
}

/// Reads a single-quoted SOQL literal body (after the opening quote): its value and the byte
/// length up to and including the closing quote.
fn read_literal(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut it = s.char_indices();
    while let Some((i, c)) = it.next() {
        match c {
            '\'' => return Some((out, i + 1)),
            '\\' => {
                let (_, e) = it.next()?;
                out.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    '\\' | '\'' | '"' => e,
                    _ => return None,
                });
            }
            c => out.push(c),
        }
    }
    None
}

fuzz_target!(|text: &str| {
    let Ok(q) = Soql::new().select(&["Id", "LastName"]).from("Lead").where_eq("LastName", text).build() else {
        return;
    };
    assert!(q.starts_with(PREFIX), "{q}");
    let (value, used) = read_literal(&q[PREFIX.len()..]).expect("the literal is terminated");
    assert_eq!(PREFIX.len() + used, q.len(), "the literal ends where the statement ends: {q}");
    assert_eq!(value, text);

    // Round trip through the emulator's SOQL engine.
    if text.trim().is_empty() || text.chars().count() > 80 || text.contains('\0') {
        return;
    }
    let w = world();
    let mut fields = serde_json::Map::new();
    fields.insert("LastName".into(), text.into());
    fields.insert("Company".into(), "Fuzz".into());
    let Ok(id) = w.emu.insert("Lead", fields) else { return };
    let ids = |soql: &str| -> Vec<String> {
        w.emu
            .query(soql, false)
            .unwrap_or_else(|e| panic!("emulator rejected {soql:?}: {e:?}"))
            .iter()
            .filter_map(|r| r.get("Id").and_then(|v| v.as_str()).map(str::to_string))
            .collect()
    };
    let found = ids(&q);
    let like = Soql::new()
        .select(&["Id"])
        .from("Lead")
        .and(Condition::like("LastName", text, LikeMatch::Contains))
        .build()
        .unwrap();
    let found_like = ids(&like);
    let other = Soql::new().select(&["Id"]).from("Lead").where_eq("LastName", format!("{text}\u{1}x")).build().unwrap();
    let found_other = ids(&other);
    w.emu.delete("Lead", &id).unwrap();
    assert_eq!(found, vec![id.clone()], "{q}");
    assert_eq!(found_like, vec![id], "{like}");
    assert!(found_other.is_empty(), "{other}");
});
