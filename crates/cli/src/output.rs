//! Rendering people for `salesync people`.

use std::io::Write;

use salesync::core::mapping::{LEAD_FIELDS, LeadField};
use salesync::core::person::Person;

/// The exported columns: the 13 synced fields in snake_case, then `salesforce_type`, `owner_id`.
pub fn columns() -> Vec<(LeadField, &'static str)> {
    LEAD_FIELDS
        .iter()
        .filter(|s| s.synced || matches!(s.field, LeadField::SalesforceType | LeadField::OwnerId))
        .map(|s| (s.field, s.snake_name))
        .collect()
}

/// One person as a JSON object with the exported columns (absent values are `null`).
pub fn person_json(p: &Person) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (f, name) in columns() {
        let v = match (f, p.field_text(f)) {
            (LeadField::MarketoId, _) => serde_json::Value::from(p.marketo_id),
            (_, Some(t)) => serde_json::Value::from(t),
            (_, None) => serde_json::Value::Null,
        };
        m.insert(name.to_string(), v);
    }
    serde_json::Value::Object(m)
}

/// Writes a header (csv/table) before the first page.
pub fn header(out: &mut dyn Write, format: crate::Format) -> std::io::Result<()> {
    match format {
        crate::Format::Jsonl => Ok(()),
        crate::Format::Csv => {
            let names: Vec<&str> = columns().iter().map(|c| c.1).collect();
            writeln!(out, "{}", names.join(","))
        }
        crate::Format::Table => writeln!(
            out,
            "{:>10}  {:<20}  {:<24}  {:<32}  {:<8}  {:<18}",
            "marketo_id", "first_name", "last_name", "email", "type", "owner_id"
        ),
    }
}

/// Writes people in a format.
pub fn write_people(out: &mut dyn Write, people: &[Person], format: crate::Format) -> std::io::Result<()> {
    for p in people {
        match format {
            crate::Format::Jsonl => writeln!(out, "{}", person_json(p))?,
            crate::Format::Csv => {
                let cells: Vec<String> = columns().iter().map(|(f, _)| csv_cell(p.field_text(*f).as_deref())).collect();
                writeln!(out, "{}", cells.join(","))?
            }
            crate::Format::Table => writeln!(
                out,
                "{:>10}  {:<20}  {:<24}  {:<32}  {:<8}  {:<18}",
                p.marketo_id,
                clip(p.first_name.as_deref(), 20),
                clip(p.last_name.as_deref(), 24),
                clip(p.email.as_deref(), 32),
                p.salesforce_type.as_str(),
                p.owner_id.as_str()
            )?,
        }
    }
    Ok(())
}

fn clip(s: Option<&str>, n: usize) -> String {
    s.unwrap_or("").chars().take(n).collect()
}

fn csv_cell(v: Option<&str>) -> String {
    match v {
        None => String::new(),
        Some(s) if s.contains([',', '"', '\n', '\r']) => format!("\"{}\"", s.replace('"', "\"\"")),
        Some(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_columns_in_table_order() {
        let names: Vec<&str> = columns().iter().map(|c| c.1).collect();
        assert_eq!(names.len(), 15);
        assert_eq!(names[0], "marketo_id");
        assert_eq!(&names[13..], &["salesforce_type", "owner_id"]);
    }

    #[test]
    fn csv_quotes_when_needed() {
        assert_eq!(csv_cell(Some("a,b")), "\"a,b\"");
        assert_eq!(csv_cell(Some("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell(None), "");
    }
}
