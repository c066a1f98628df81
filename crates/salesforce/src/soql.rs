//! A small, safe SOQL builder: the only place user data enters a query.
//!
//! Field and object names must match `^[A-Za-z_][A-Za-z0-9_.]*$`; every value is a [`Literal`]
//! rendered with SOQL's escaping rules, so no value can close its quote or inject syntax.
//!
//! ```
//! use salesync_salesforce::{Condition, Literal, Soql};
//!
//! let q = Soql::new()
//!     .select(&["Id", "Email"])
//!     .from("Lead")
//!     .where_eq("Email", "o'brien@example.com")
//!     .and(Condition::any(vec![Condition::eq("IsConverted", false), Condition::eq("Status", Literal::Null)]))
//!     .order_by("Id")
//!     .limit(10)
//!     .build()
//!     .unwrap();
//! assert_eq!(
//!     q,
//!     "SELECT Id, Email FROM Lead WHERE Email = 'o\\'brien@example.com' \
//!      AND (IsConverted = false OR Status = null) ORDER BY Id ASC LIMIT 10"
//! );
//! ```

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use salesync_core::sfid::SalesforceId;

/// Why a query could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SoqlError {
    /// A field or object name that is not a plain SOQL identifier.
    #[error("{what} name {value:?} is not a valid SOQL identifier")]
    InvalidIdentifier {
        /// "field" or "object".
        what: &'static str,
        /// The offending name (truncated to 80 characters).
        value: String,
    },
    /// No `FROM`.
    #[error("query has no FROM object")]
    MissingFrom,
    /// No selected fields.
    #[error("query selects no fields")]
    MissingSelect,
    /// An `IN` with no values (SOQL rejects `IN ()`).
    #[error("IN list on {field} is empty")]
    EmptyIn {
        /// The field.
        field: String,
    },
}

impl From<SoqlError> for salesync_core::Error {
    fn from(e: SoqlError) -> Self {
        salesync_core::Error::InvalidInput { field: "soql".into(), reason: e.to_string() }
    }
}

/// True when `name` is a plain SOQL identifier (`^[A-Za-z_][A-Za-z0-9_.]*$`), optionally dotted
/// for relationship paths.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Escapes text for use inside a single-quoted SOQL string literal (without the quotes).
///
/// Backslash, both quotes, newline, carriage return, tab, backspace and form feed become their
/// backslash escapes; everything else (including any Unicode) is kept as is.
pub fn escape_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// Like [`escape_literal`], and also escapes the `LIKE` wildcards `%` and `_`, so the text
/// matches only itself inside a `LIKE` pattern.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '%' => out.push_str("\\%"),
            '_' => out.push_str("\\_"),
            c => push_escaped(&mut out, c),
        }
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\'' => out.push_str("\\'"),
        '"' => out.push_str("\\\""),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        c => out.push(c),
    }
}

/// A SOQL value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Literal {
    /// A string, rendered quoted and escaped.
    Text(String),
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A datetime, rendered in UTC as `YYYY-MM-DDThh:mm:ssZ` (sub-second digits are dropped, i.e.
    /// rounded down: `SystemModstamp > t` then also returns records of t's own second).
    DateTime(DateTime<Utc>),
    /// A date, rendered `YYYY-MM-DD`.
    Date(NaiveDate),
    /// A record id, rendered quoted (18-character form).
    Id(SalesforceId),
    /// `null`.
    Null,
}

impl Literal {
    fn render(&self, out: &mut String) {
        match self {
            Literal::Text(s) => {
                out.push('\'');
                out.push_str(&escape_literal(s));
                out.push('\'');
            }
            Literal::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Literal::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Literal::DateTime(t) => {
                let _ = write!(out, "{}", t.format("%Y-%m-%dT%H:%M:%SZ"));
            }
            Literal::Date(d) => {
                let _ = write!(out, "{}", d.format("%Y-%m-%d"));
            }
            Literal::Id(id) => {
                out.push('\'');
                out.push_str(id.as_str());
                out.push('\'');
            }
            Literal::Null => out.push_str("null"),
        }
    }
}

impl From<&str> for Literal {
    fn from(s: &str) -> Self {
        Literal::Text(s.to_string())
    }
}
impl From<String> for Literal {
    fn from(s: String) -> Self {
        Literal::Text(s)
    }
}
impl From<&String> for Literal {
    fn from(s: &String) -> Self {
        Literal::Text(s.clone())
    }
}
impl From<bool> for Literal {
    fn from(b: bool) -> Self {
        Literal::Bool(b)
    }
}
impl From<i64> for Literal {
    fn from(i: i64) -> Self {
        Literal::Int(i)
    }
}
impl From<DateTime<Utc>> for Literal {
    fn from(t: DateTime<Utc>) -> Self {
        Literal::DateTime(t)
    }
}
impl From<NaiveDate> for Literal {
    fn from(d: NaiveDate) -> Self {
        Literal::Date(d)
    }
}
impl From<SalesforceId> for Literal {
    fn from(id: SalesforceId) -> Self {
        Literal::Id(id)
    }
}
impl From<&SalesforceId> for Literal {
    fn from(id: &SalesforceId) -> Self {
        Literal::Id(id.clone())
    }
}

/// How a `LIKE` condition matches the (escaped) text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LikeMatch {
    /// The whole value equals the text (case-insensitively, as LIKE does).
    Exact,
    /// The value starts with the text.
    Prefix,
    /// The value contains the text.
    Contains,
    /// The value ends with the text.
    Suffix,
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Cmp { field: String, op: &'static str, value: Literal },
    In { field: String, values: Vec<Literal>, negate: bool },
    Like { field: String, text: String, mode: LikeMatch },
    Any(Vec<Condition>),
    All(Vec<Condition>),
}

/// A `WHERE` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition(Cond);

impl Condition {
    fn cmp(field: &str, op: &'static str, value: Literal) -> Self {
        Condition(Cond::Cmp { field: field.to_string(), op, value })
    }
    /// `field = value`.
    pub fn eq(field: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(field, "=", value.into())
    }
    /// `field != value`.
    pub fn ne(field: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(field, "!=", value.into())
    }
    /// `field > value`.
    pub fn gt(field: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(field, ">", value.into())
    }
    /// `field >= value`.
    pub fn ge(field: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(field, ">=", value.into())
    }
    /// `field < value`.
    pub fn lt(field: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(field, "<", value.into())
    }
    /// `field <= value`.
    pub fn le(field: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(field, "<=", value.into())
    }
    /// `field IN (v1, v2, …)`; an empty list fails at [`Soql::build`].
    pub fn in_list<L: Into<Literal>>(field: &str, values: impl IntoIterator<Item = L>) -> Self {
        Condition(Cond::In {
            field: field.to_string(),
            values: values.into_iter().map(Into::into).collect(),
            negate: false,
        })
    }
    /// `field NOT IN (v1, v2, …)`.
    pub fn not_in<L: Into<Literal>>(field: &str, values: impl IntoIterator<Item = L>) -> Self {
        Condition(Cond::In {
            field: field.to_string(),
            values: values.into_iter().map(Into::into).collect(),
            negate: true,
        })
    }
    /// `field LIKE '…'` where `text` is matched literally (its `%` and `_` are escaped) as `mode` says.
    pub fn like(field: &str, text: &str, mode: LikeMatch) -> Self {
        Condition(Cond::Like { field: field.to_string(), text: text.to_string(), mode })
    }
    /// `(c1 OR c2 …)`.
    pub fn any(conditions: Vec<Condition>) -> Self {
        Condition(Cond::Any(conditions))
    }
    /// `(c1 AND c2 …)`.
    pub fn all(conditions: Vec<Condition>) -> Self {
        Condition(Cond::All(conditions))
    }

    fn render(&self, out: &mut String) -> Result<(), SoqlError> {
        match &self.0 {
            Cond::Cmp { field, op, value } => {
                push_ident(out, "field", field)?;
                let _ = write!(out, " {op} ");
                value.render(out);
            }
            Cond::In { field, values, negate } => {
                if values.is_empty() {
                    return Err(SoqlError::EmptyIn { field: truncate(field) });
                }
                push_ident(out, "field", field)?;
                out.push_str(if *negate { " NOT IN (" } else { " IN (" });
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.render(out);
                }
                out.push(')');
            }
            Cond::Like { field, text, mode } => {
                push_ident(out, "field", field)?;
                out.push_str(" LIKE '");
                if matches!(mode, LikeMatch::Contains | LikeMatch::Suffix) {
                    out.push('%');
                }
                out.push_str(&escape_like(text));
                if matches!(mode, LikeMatch::Contains | LikeMatch::Prefix) {
                    out.push('%');
                }
                out.push('\'');
            }
            Cond::Any(cs) | Cond::All(cs) => {
                let joiner = if matches!(self.0, Cond::Any(_)) { " OR " } else { " AND " };
                out.push('(');
                for (i, c) in cs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(joiner);
                    }
                    c.render(out)?;
                }
                out.push(')');
            }
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn push_ident(out: &mut String, what: &'static str, name: &str) -> Result<(), SoqlError> {
    if is_identifier(name) {
        out.push_str(name);
        Ok(())
    } else {
        Err(SoqlError::InvalidIdentifier { what, value: truncate(name) })
    }
}

/// A SOQL `SELECT` statement under construction. All `where_*` and [`and`](Soql::and) conditions
/// are joined with `AND`; errors (bad names, empty `IN`) surface in [`build`](Soql::build).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Soql {
    fields: Vec<String>,
    from: Option<String>,
    conditions: Vec<Condition>,
    order: Vec<(String, bool)>,
    limit: Option<u32>,
}

impl Soql {
    /// An empty query.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds selected fields.
    pub fn select(mut self, fields: &[&str]) -> Self {
        self.fields.extend(fields.iter().map(|f| f.to_string()));
        self
    }

    /// Adds one selected field (e.g. a configured external-id field).
    pub fn select_field(mut self, field: &str) -> Self {
        self.fields.push(field.to_string());
        self
    }

    /// The object queried.
    pub fn from(mut self, object: &str) -> Self {
        self.from = Some(object.to_string());
        self
    }

    /// `AND field = value`.
    pub fn where_eq(self, field: &str, value: impl Into<Literal>) -> Self {
        self.and(Condition::eq(field, value))
    }

    /// `AND field IN (…)`.
    pub fn where_in<L: Into<Literal>>(self, field: &str, values: impl IntoIterator<Item = L>) -> Self {
        self.and(Condition::in_list(field, values))
    }

    /// `AND field > value` (typically a datetime).
    pub fn where_gt(self, field: &str, value: impl Into<Literal>) -> Self {
        self.and(Condition::gt(field, value))
    }

    /// `AND field < value`.
    pub fn where_lt(self, field: &str, value: impl Into<Literal>) -> Self {
        self.and(Condition::lt(field, value))
    }

    /// `AND condition`.
    pub fn and(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }

    /// `ORDER BY field ASC` (appended after earlier orderings).
    pub fn order_by(mut self, field: &str) -> Self {
        self.order.push((field.to_string(), false));
        self
    }

    /// `ORDER BY field DESC` (appended after earlier orderings).
    pub fn order_by_desc(mut self, field: &str) -> Self {
        self.order.push((field.to_string(), true));
        self
    }

    /// `LIMIT n`.
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }

    /// Renders the statement, validating every name.
    pub fn build(&self) -> Result<String, SoqlError> {
        if self.fields.is_empty() {
            return Err(SoqlError::MissingSelect);
        }
        let from = self.from.as_deref().ok_or(SoqlError::MissingFrom)?;
        let mut out = String::with_capacity(128);
        out.push_str("SELECT ");
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_ident(&mut out, "field", f)?;
        }
        out.push_str(" FROM ");
        push_ident(&mut out, "object", from)?;
        for (i, c) in self.conditions.iter().enumerate() {
            out.push_str(if i == 0 { " WHERE " } else { " AND " });
            c.render(&mut out)?;
        }
        for (i, (f, desc)) in self.order.iter().enumerate() {
            out.push_str(if i == 0 { " ORDER BY " } else { ", " });
            push_ident(&mut out, "field", f)?;
            out.push_str(if *desc { " DESC" } else { " ASC" });
        }
        if let Some(n) = self.limit {
            let _ = write!(out, " LIMIT {n}");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reference unescaper: reads a single-quoted SOQL literal starting at `s[0] == '\''` and returns
    /// its value and the number of bytes consumed, or `None` when the literal is unterminated or
    /// has an unknown escape.
    fn read_literal(s: &str) -> Option<(String, usize)> {
        let mut it = s.char_indices();
        if it.next()?.1 != '\'' {
            return None;
        }
        let mut out = String::new();
        while let Some((i, c)) = it.next() {
            match c {
                '\'' => return Some((out, i + 1)),
                '\\' => {
                    let (_, e) = it.next()?;
                    out.push(match e {
                        'n' | 'N' => '\n',
                        'r' | 'R' => '\r',
                        't' | 'T' => '\t',
                        'b' | 'B' => '\u{8}',
                        'f' | 'F' => '\u{c}',
                        '"' => '"',
                        '\'' => '\'',
                        '\\' => '\\',
                        '%' => '%',
                        '_' => '_',
                        _ => return None,
                    });
                }
                c => out.push(c),
            }
        }
        None
    }

    #[test]
    fn hostile_literals_are_escaped() {
        let cases = [
            ("o'brien", r"'o\'brien'"),
            (r"back\slash", r"'back\\slash'"),
            ("' OR Name != '", r"'\' OR Name != \''"),
            ("\\'", r"'\\\''"),
            ("line\nbreak\ttab\r", r"'line\nbreak\ttab\r'"),
            ("quote\"d", r#"'quote\"d'"#),
            ("ünïcødé ✉ 名前", "'ünïcødé ✉ 名前'"),
        ];
        for (input, want) in cases {
            let q = Soql::new().select(&["Id"]).from("Lead").where_eq("Email", input).build().unwrap();
            assert_eq!(q, format!("SELECT Id FROM Lead WHERE Email = {want}"), "{input:?}");
            let (back, used) = read_literal(want).unwrap();
            assert_eq!(back, input);
            assert_eq!(used, want.len());
        }
    }

    #[test]
    fn like_escapes_wildcards_only_when_asked() {
        let q = Soql::new()
            .select(&["Id"])
            .from("Lead")
            .and(Condition::like("Email", "100%_o'k", LikeMatch::Contains))
            .where_eq("Company", "100%_x")
            .build()
            .unwrap();
        assert_eq!(q, r"SELECT Id FROM Lead WHERE Email LIKE '%100\%\_o\'k%' AND Company = '100%_x'");
        assert_eq!(escape_like("a%b_c\\"), r"a\%b\_c\\");
    }

    #[test]
    fn renders_every_clause() {
        let since = DateTime::parse_from_rfc3339("2025-06-03T21:20:15.750Z").unwrap().with_timezone(&Utc);
        let id = SalesforceId::parse("003d000000Yp8Uz").unwrap();
        let q = Soql::new()
            .select(&["Id", "Opportunity.IsClosed"])
            .from("OpportunityContactRole")
            .where_in("ContactId", [&id])
            .where_gt("SystemModstamp", since)
            .and(Condition::all(vec![Condition::ne("Role", Literal::Null), Condition::le("Amount", 5i64)]))
            .and(Condition::not_in("StageName", ["Closed Won", "Closed Lost"]))
            .and(Condition::eq("CloseDate", NaiveDate::from_ymd_opt(2025, 1, 2).unwrap()))
            .order_by_desc("SystemModstamp")
            .order_by("Id")
            .limit(200)
            .build()
            .unwrap();
        assert_eq!(
            q,
            "SELECT Id, Opportunity.IsClosed FROM OpportunityContactRole WHERE ContactId IN ('003d000000Yp8UzAAJ') \
             AND SystemModstamp > 2025-06-03T21:20:15Z AND (Role != null AND Amount <= 5) \
             AND StageName NOT IN ('Closed Won', 'Closed Lost') AND CloseDate = 2025-01-02 \
             ORDER BY SystemModstamp DESC, Id ASC LIMIT 200"
        );
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", "1Id", "Id,Name", "Id FROM", "Name'", "Id--", "Email)", "a b", "Ö"] {
            let e = Soql::new().select(&[bad]).from("Lead").build().unwrap_err();
            assert!(matches!(e, SoqlError::InvalidIdentifier { what: "field", .. }), "{bad}");
            let e = Soql::new().select(&["Id"]).from(bad).build().unwrap_err();
            assert!(matches!(e, SoqlError::InvalidIdentifier { what: "object", .. }), "{bad}");
            let e = Soql::new().select(&["Id"]).from("Lead").where_eq(bad, 1i64).build().unwrap_err();
            assert!(matches!(e, SoqlError::InvalidIdentifier { .. }), "{bad}");
            let e = Soql::new().select(&["Id"]).from("Lead").order_by(bad).build().unwrap_err();
            assert!(matches!(e, SoqlError::InvalidIdentifier { .. }), "{bad}");
        }
        for good in ["Id", "_x", "Salesync_Activity_Id__c", "Owner.Email", "a1"] {
            assert!(is_identifier(good), "{good}");
        }
        assert_eq!(Soql::new().from("Lead").build(), Err(SoqlError::MissingSelect));
        assert_eq!(Soql::new().select(&["Id"]).build(), Err(SoqlError::MissingFrom));
        let empty: [&str; 0] = [];
        assert!(matches!(
            Soql::new().select(&["Id"]).from("Lead").where_in("Id", empty).build(),
            Err(SoqlError::EmptyIn { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_string_round_trips_and_never_closes_the_quote_early(s in any::<String>()) {
            let q = Soql::new().select(&["Id"]).from("Lead").where_eq("Email", s.as_str()).limit(1).build().unwrap();
            let prefix = "SELECT Id FROM Lead WHERE Email = ";
            prop_assert!(q.starts_with(prefix));
            let rest = &q[prefix.len()..];
            let (back, used) = read_literal(rest).expect("literal terminates");
            prop_assert_eq!(&back, &s);
            // The literal ends exactly where the builder's own syntax resumes.
            prop_assert_eq!(&rest[used..], " LIMIT 1");
        }

        #[test]
        fn like_text_round_trips(s in "[a-z%_'\\\\\"\n ]{0,20}") {
            let q = Soql::new().select(&["Id"]).from("Lead").and(Condition::like("Email", &s, LikeMatch::Exact)).build().unwrap();
            let rest = &q["SELECT Id FROM Lead WHERE Email LIKE ".len()..];
            let (back, used) = read_literal(rest).expect("literal terminates");
            prop_assert_eq!(used, rest.len());
            prop_assert_eq!(back, s);
        }
    }
}
