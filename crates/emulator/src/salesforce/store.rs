//! The in-memory org: records, validation and the derived fields a real org maintains.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{Map, Value};

use super::errors::SalesforceApiError as E;
use super::schema::{Access, FType, FieldDef, ObjDef, Schema};
use crate::sfid;

/// Formats a datetime the way the REST API does (`2026-01-01T00:00:00.000+0000`).
pub(crate) fn fmt_dt(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Parses an ISO 8601 datetime with `Z`, `+hh:mm` or `+hhmm` (no offset means UTC).
pub(crate) fn parse_dt(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    None
}

/// Parses `YYYY-MM-DD`.
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

/// One stored record.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pub(crate) fields: Map<String, Value>,
    pub(crate) deleted_at: Option<DateTime<Utc>>,
}

/// An undo entry: the type, id and prior state (None = did not exist).
pub(crate) type Undo = (&'static str, String, Option<Rec>);

/// Who/when of a write.
pub(crate) struct WriteCtx<'a> {
    pub(crate) schema: &'a Schema,
    pub(crate) now: DateTime<Utc>,
    pub(crate) user: &'a str,
}

/// Result of a lead conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertResult {
    /// The (new or merged) Contact id.
    pub contact_id: String,
    /// The (new or existing) Account id.
    pub account_id: String,
    /// The new Opportunity id, when one was created.
    pub opportunity_id: Option<String>,
}

/// A record id as stored: 18 ASCII characters.
pub(crate) type Id18 = [u8; 18];

/// The stored form of an 18-character id (`None` for anything else).
pub(crate) fn id18(s: &str) -> Option<Id18> {
    s.as_bytes().try_into().ok()
}

/// The text of a stored id.
pub(crate) fn id_str(id: &Id18) -> &str {
    std::str::from_utf8(id).unwrap_or("")
}

/// The ids sharing one indexed value: inline for one, a small vector for a few, a tree beyond.
#[derive(Debug, Clone)]
pub(crate) enum Post {
    One(Id18),
    Few(Vec<Id18>),
    Many(BTreeSet<Id18>),
}

const FEW: usize = 32;

impl Post {
    fn insert(&mut self, id: Id18) {
        match self {
            Post::One(x) if *x == id => {}
            Post::One(x) => *self = Post::Few(vec![*x, id]),
            Post::Few(v) if v.contains(&id) => {}
            Post::Few(v) if v.len() < FEW => v.push(id),
            Post::Few(v) => {
                let mut t: BTreeSet<Id18> = v.iter().copied().collect();
                t.insert(id);
                *self = Post::Many(t);
            }
            Post::Many(t) => {
                t.insert(id);
            }
        }
    }

    /// Removes an id; true when the posting is now empty.
    fn remove(&mut self, id: &Id18) -> bool {
        match self {
            Post::One(x) => x == id,
            Post::Few(v) => {
                v.retain(|x| x != id);
                match v.as_slice() {
                    [] => return true,
                    [one] => {
                        let one = *one;
                        *self = Post::One(one);
                    }
                    _ => {}
                }
                false
            }
            Post::Many(t) => {
                t.remove(id);
                t.is_empty()
            }
        }
    }

    /// How many ids share the value.
    pub(crate) fn len(&self) -> usize {
        match self {
            Post::One(_) => 1,
            Post::Few(v) => v.len(),
            Post::Many(t) => t.len(),
        }
    }

    /// The ids (unordered for small postings).
    pub(crate) fn ids(&self) -> Box<dyn Iterator<Item = &Id18> + '_> {
        match self {
            Post::One(x) => Box::new(std::iter::once(x)),
            Post::Few(v) => Box::new(v.iter()),
            Post::Many(t) => Box::new(t.iter()),
        }
    }
}

/// The index key of a stored value: its text, lower-cased (text comparisons are
/// case-insensitive); `None` for null. Numbers and booleans use their JSON text, so a lookup
/// yields a superset of the matches, which the full `WHERE` then narrows.
pub(crate) fn index_key(v: &Value) -> Option<String> {
    text_of(v).map(|t| t.to_lowercase())
}

/// One maintained value index: lower-cased value → ids of every stored record (soft-deleted ones
/// included) of a type with that value.
#[derive(Debug, Default)]
struct FieldIndex {
    field: String,
    map: HashMap<Box<str>, Post>,
}

/// Counters of how queries found their rows.
#[derive(Debug, Default)]
pub(crate) struct QueryCounters {
    pub(crate) queries: AtomicU64,
    pub(crate) indexed: AtomicU64,
    pub(crate) rows_examined: AtomicU64,
}

/// The canonical 18-character id whose lower-cased text is `lower` (an 18-character lower-case
/// ASCII string): the case of the first 15 characters is restored from the case-safe suffix.
/// `None` when the suffix cannot belong to a well-formed id.
fn canonical_id(lower: &str) -> Option<String> {
    const SUFFIX: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let b = lower.as_bytes();
    if b.len() != 18 || !b.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let mut out = Vec::with_capacity(18);
    for chunk in 0..3 {
        let c = b[15 + chunk].to_ascii_uppercase();
        let bits = SUFFIX.iter().position(|x| *x == c)?;
        for bit in 0..5 {
            let ch = b[chunk * 5 + bit];
            let upper = bits & (1 << bit) != 0;
            if upper && !ch.is_ascii_alphabetic() {
                return None;
            }
            out.push(if upper { ch.to_ascii_uppercase() } else { ch.to_ascii_lowercase() });
        }
    }
    out.extend(b[15..].iter().map(u8::to_ascii_uppercase));
    String::from_utf8(out).ok()
}

/// All records.
#[derive(Debug, Default)]
pub(crate) struct Org {
    recs: HashMap<&'static str, BTreeMap<String, Rec>>,
    next: u64,
    /// Undo log, recorded while `Some` (allOrNone collections).
    pub(crate) journal: Option<Vec<Undo>>,
    /// Value indexes per type (external ids, reference fields, Email, IsConverted).
    index: HashMap<&'static str, Vec<FieldIndex>>,
    /// Stored ids that are not in canonical case (possible only through forced ids), which an
    /// `Id` lookup cannot find by restoring case from the suffix.
    odd_ids: BTreeSet<String>,
    /// When true, queries scan instead of using indexes (tests compare the two).
    pub(crate) scan_only: AtomicBool,
    /// How queries found their rows.
    pub(crate) counters: QueryCounters,
}

fn label(field: &str) -> String {
    match field {
        "WhoId" => "Name ID".into(),
        "WhatId" => "Related To ID".into(),
        f => match f.strip_suffix("Id") {
            Some(r) => format!("{r} ID"),
            None => f.to_string(),
        },
    }
}

fn is_email(s: &str) -> bool {
    let mut parts = s.split('@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(l), Some(d), None) => {
            !l.is_empty()
                && d.contains('.')
                && !d.starts_with('.')
                && !d.ends_with('.')
                && !s.contains(char::is_whitespace)
        }
        _ => false,
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parser_err(f: &FieldDef, v: &Value) -> E {
    E::json_parser(format!(
        "Cannot deserialize instance of {} from {} value {v} for field {}",
        f.ty.describe_name(),
        kind(v),
        f.name
    ))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
        Value::Null => "VALUE_NULL",
    }
}

/// Converts an input value to the stored representation of a field.
pub(crate) fn coerce(f: &FieldDef, v: &Value) -> Result<Value, E> {
    if v.is_null() {
        return Ok(if f.ty == FType::Bool { Value::Bool(false) } else { Value::Null });
    }
    match &f.ty {
        FType::Id | FType::Ref(_) => {
            let s = text_of(v).ok_or_else(|| parser_err(f, v))?;
            if s.is_empty() {
                return Ok(Value::Null);
            }
            match sfid::to18(&s) {
                Some(id) => Ok(Value::String(id)),
                None => Err(E::bad(
                    if matches!(f.name.as_str(), "WhoId" | "WhatId") {
                        "FIELD_INTEGRITY_EXCEPTION"
                    } else {
                        "MALFORMED_ID"
                    },
                    format!("{}: id value of incorrect type: {s}", label(&f.name)),
                )
                .with_fields([f.name.clone()])),
            }
        }
        FType::Str(max) => {
            let s = text_of(v).ok_or_else(|| parser_err(f, v))?;
            if s.chars().count() > *max {
                return Err(E::bad(
                    "STRING_TOO_LONG",
                    format!("{}: data value too large: {s} (max length={max})", f.name),
                )
                .with_fields([f.name.clone()]));
            }
            Ok(if s.is_empty() { Value::Null } else { Value::String(s) })
        }
        FType::Email => {
            let s = text_of(v).ok_or_else(|| parser_err(f, v))?;
            if s.is_empty() {
                return Ok(Value::Null);
            }
            if s.chars().count() > 80 || !is_email(&s) {
                return Err(E::bad("INVALID_EMAIL_ADDRESS", format!("{}: invalid email address: {s}", f.name))
                    .with_fields([f.name.clone()]));
            }
            Ok(Value::String(s))
        }
        FType::Bool => match v {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(parser_err(f, v)),
        },
        FType::Int => match v {
            Value::Number(n) if n.is_i64() => Ok(v.clone()),
            Value::Number(n) => n.as_f64().map(|x| Value::from(x.round() as i64)).ok_or_else(|| parser_err(f, v)),
            Value::String(s) => s.trim().parse::<i64>().map(Value::from).map_err(|_| parser_err(f, v)),
            _ => Err(parser_err(f, v)),
        },
        FType::Num => match v {
            Value::Number(_) => Ok(v.clone()),
            Value::String(s) => s.trim().parse::<f64>().map(Value::from).map_err(|_| parser_err(f, v)),
            _ => Err(parser_err(f, v)),
        },
        FType::Date => {
            let s = text_of(v).ok_or_else(|| parser_err(f, v))?;
            let d = parse_date(&s).or_else(|| parse_dt(&s).map(|t| t.date_naive()));
            d.map(|d| Value::String(d.format("%Y-%m-%d").to_string())).ok_or_else(|| parser_err(f, v))
        }
        FType::DateTime => {
            let s = text_of(v).ok_or_else(|| parser_err(f, v))?;
            parse_dt(&s).map(|t| Value::String(fmt_dt(t))).ok_or_else(|| parser_err(f, v))
        }
        FType::Pick(values) => {
            let s = text_of(v).ok_or_else(|| parser_err(f, v))?;
            if s.is_empty() {
                return Ok(Value::Null);
            }
            if values.contains(&s) {
                Ok(Value::String(s))
            } else {
                Err(E::bad(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    format!("{}: bad value for restricted picklist field: {s}", f.name),
                )
                .with_fields([f.name.clone()]))
            }
        }
        FType::Any => match v {
            Value::Array(_) | Value::Object(_) => Err(parser_err(f, v)),
            _ => Ok(v.clone()),
        },
    }
}

fn s<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

impl Org {
    fn map(&self, ty: &str) -> Option<&BTreeMap<String, Rec>> {
        self.recs.iter().find(|(k, _)| **k == ty).map(|(_, v)| v)
    }

    /// A record by type and (15/18-char) id, deleted ones included.
    pub(crate) fn get(&self, ty: &str, id: &str) -> Option<&Rec> {
        let id = sfid::to18(id)?;
        self.map(ty)?.get(&id)
    }

    /// A record of any type by id.
    pub(crate) fn find(&self, schema: &Schema, id: &str) -> Option<(&'static str, &Rec)> {
        let o = schema.by_prefix(id)?;
        self.get(o.name, id).map(|r| (o.name, r))
    }

    /// All records of a type, in id order, deleted ones included.
    pub(crate) fn all(&self, ty: &str) -> impl Iterator<Item = &Rec> {
        self.map(ty).into_iter().flat_map(|m| m.values())
    }

    /// (queries, indexed queries, rows examined) so far.
    pub(crate) fn query_counts(&self) -> (u64, u64, u64) {
        let c = &self.counters;
        (c.queries.load(Ordering::Relaxed), c.indexed.load(Ordering::Relaxed), c.rows_examined.load(Ordering::Relaxed))
    }

    /// The records of a type by id.
    pub(crate) fn by_id(&self, ty: &str) -> Option<&BTreeMap<String, Rec>> {
        self.map(ty)
    }

    /// Maintains a value index on a field; records already stored are indexed.
    pub(crate) fn index_field(&mut self, ty: &'static str, field: &str) {
        let list = self.index.entry(ty).or_default();
        if list.iter().any(|f| f.field == field) {
            return;
        }
        let mut fi = FieldIndex { field: field.to_string(), map: HashMap::new() };
        if let Some(m) = self.recs.get(ty) {
            for (id, rec) in m {
                if let (Some(k), Some(id)) = (rec.fields.get(field).and_then(index_key), id18(id)) {
                    fi.map.entry(k.into_boxed_str()).or_insert(Post::One(id)).insert(id);
                }
            }
        }
        list.push(fi);
    }

    /// The posting of a value (an [`index_key`]) in an index; `None` when the field is not
    /// indexed, `Some(None)` when no record has the value.
    pub(crate) fn posting(&self, ty: &str, field: &str, key: &str) -> Option<Option<&Post>> {
        let fi = self.index.get(ty)?.iter().find(|f| f.field.eq_ignore_ascii_case(field))?;
        Some(fi.map.get(key))
    }

    /// Ids of the stored records of a type whose id equals `lit` case-insensitively (at most one
    /// for well-formed ids).
    pub(crate) fn ids_matching(&self, ty: &str, lit: &str) -> Vec<Id18> {
        let lower = lit.to_lowercase();
        let Some(m) = self.map(ty) else { return Vec::new() };
        let mut out = Vec::new();
        if let Some(c) = canonical_id(&lower)
            && m.contains_key(&c)
            && let Some(id) = id18(&c)
        {
            out.push(id);
        }
        for odd in self.odd_ids.iter().filter(|o| o.to_lowercase() == lower) {
            if m.contains_key(odd)
                && let Some(id) = id18(odd)
            {
                out.push(id);
            }
        }
        out
    }

    fn reindex(
        index: &mut HashMap<&'static str, Vec<FieldIndex>>,
        ty: &str,
        id: &str,
        old: Option<&Rec>,
        new: Option<&Rec>,
    ) {
        let Some(list) = index.get_mut(ty) else { return };
        let Some(key) = id18(id) else { return };
        for fi in list.iter_mut() {
            let ko = old.and_then(|r| r.fields.get(&fi.field)).and_then(index_key);
            let kn = new.and_then(|r| r.fields.get(&fi.field)).and_then(index_key);
            if ko == kn {
                continue;
            }
            if let Some(v) = ko
                && let Some(p) = fi.map.get_mut(v.as_str())
                && p.remove(&key)
            {
                fi.map.remove(v.as_str());
            }
            if let Some(v) = kn {
                match fi.map.get_mut(v.as_str()) {
                    Some(p) => p.insert(key),
                    None => {
                        fi.map.insert(v.into_boxed_str(), Post::One(key));
                    }
                }
            }
        }
    }

    fn note_id(&mut self, id: &str, present: bool) {
        if canonical_id(&id.to_lowercase()).as_deref() == Some(id) {
            return;
        }
        if present {
            self.odd_ids.insert(id.to_string());
        } else {
            self.odd_ids.remove(id);
        }
    }

    fn put(&mut self, ty: &'static str, id: String, rec: Rec) {
        let map = self.recs.entry(ty).or_default();
        Self::reindex(&mut self.index, ty, &id, map.get(&id), Some(&rec));
        let prev = map.insert(id.clone(), rec);
        if prev.is_none() {
            self.note_id(&id, true);
        }
        if let Some(j) = self.journal.as_mut() {
            j.push((ty, id, prev));
        }
    }

    /// Restores the state before the journalled writes.
    pub(crate) fn rollback(&mut self, undo: Vec<Undo>) {
        for (ty, id, prev) in undo.into_iter().rev() {
            let map = self.recs.entry(ty).or_default();
            Self::reindex(&mut self.index, ty, &id, map.get(&id), prev.as_ref());
            match prev {
                Some(r) => {
                    map.insert(id, r);
                }
                None => {
                    map.remove(&id);
                    self.note_id(&id, false);
                }
            }
        }
    }

    /// Closes the journal opened over `outer` (the journal taken when the series of writes began):
    /// with `undo` the series' writes are rolled back, else they are kept and appended to `outer`
    /// (so an enclosing all-or-none series can still undo them); `outer` is the journal again.
    pub(crate) fn end_journal(&mut self, outer: Option<Vec<Undo>>, undo: bool) {
        let inner = self.journal.take();
        self.journal = if undo {
            if let Some(j) = inner {
                self.rollback(j);
            }
            outer
        } else {
            match (outer, inner) {
                (Some(mut o), Some(j)) => {
                    o.extend(j);
                    Some(o)
                }
                (o, _) => o,
            }
        };
    }

    fn mint(&mut self, prefix: &str) -> String {
        loop {
            self.next += 1;
            let id = sfid::mint(prefix, 10_000_000 + self.next);
            let taken = self.recs.values().any(|m| m.contains_key(&id));
            if !taken {
                return id;
            }
        }
    }

    /// Applies input fields onto `base` with access and type checks.
    fn apply_input(
        obj: &ObjDef,
        base: &mut Map<String, Value>,
        input: &Map<String, Value>,
        create: bool,
    ) -> Result<Vec<String>, E> {
        let mut touched = Vec::new();
        let mut readonly = Vec::new();
        for (k, v) in input {
            if k == "attributes" {
                continue;
            }
            let Some(f) = obj.field(k) else {
                return Err(E::invalid_field(format!("No such column '{k}' on sobject of type {}", obj.name)));
            };
            if f.name == "Id" {
                if create {
                    return Err(E::invalid_field("cannot specify Id in an insert call").with_fields(["Id"]));
                }
                continue;
            }
            let writable = match f.access {
                Access::Write => true,
                Access::CreateOnly => create,
                Access::ReadOnly => false,
            };
            if !writable {
                readonly.push(f.name.clone());
                continue;
            }
            let val = coerce(f, v)?;
            base.insert(f.name.clone(), val);
            touched.push(f.name.clone());
        }
        if !readonly.is_empty() {
            return Err(E::bad(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                    readonly.join(", ")
                ),
            )
            .with_fields(readonly));
        }
        Ok(touched)
    }

    fn check_refs(&self, cx: &WriteCtx<'_>, obj: &ObjDef, m: &Map<String, Value>, touched: &[String]) -> Result<(), E> {
        for name in touched {
            let Some(f) = obj.field(name) else { continue };
            let FType::Ref(targets) = f.ty else { continue };
            let Some(id) = s(m, &f.name) else { continue };
            let target = cx.schema.by_prefix(id).filter(|o| targets.contains(&o.name));
            let Some(target) = target else {
                return Err(E::bad(
                    "FIELD_INTEGRITY_EXCEPTION",
                    format!("{}: id value of incorrect type: {id}", label(&f.name)),
                )
                .with_fields([f.name.clone()]));
            };
            let Some(rec) = self.get(target.name, id) else {
                return Err(
                    E::bad("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id").with_fields([f.name.clone()])
                );
            };
            if rec.deleted_at.is_some() {
                return Err(E::bad("ENTITY_IS_DELETED", "entity is deleted").with_fields([f.name.clone()]));
            }
            if target.name == "Lead" && rec.fields.get("IsConverted") == Some(&Value::Bool(true)) {
                return Err(E::bad("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
                    .with_fields([f.name.clone()]));
            }
            if target.name == "User" && rec.fields.get("IsActive") == Some(&Value::Bool(false)) {
                return Err(E::bad("INACTIVE_OWNER_OR_USER", "operation performed with inactive user")
                    .with_fields([f.name.clone()]));
            }
        }
        Ok(())
    }

    fn check_required_unique(&self, obj: &ObjDef, m: &Map<String, Value>, self_id: Option<&str>) -> Result<(), E> {
        let missing: Vec<String> = obj
            .fields
            .iter()
            .filter(|f| f.required && m.get(&f.name).is_none_or(Value::is_null))
            .map(|f| f.name.clone())
            .collect();
        if !missing.is_empty() {
            return Err(E::bad(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
            )
            .with_fields(missing));
        }
        for f in obj.fields.iter().filter(|f| f.unique) {
            let Some(v) = m.get(&f.name).and_then(text_of) else { continue };
            let dup = self.find_by(obj.name, &f.name, &v).into_iter().find(|id| Some(id.as_str()) != self_id);
            if let Some(d) = dup {
                return Err(E::bad(
                    "DUPLICATE_VALUE",
                    format!("duplicate value found: {} duplicates value on record with id: {}", f.name, d),
                )
                .with_fields([f.name.clone()]));
            }
        }
        Ok(())
    }

    fn derive(&self, cx: &WriteCtx<'_>, ty: &str, m: &mut Map<String, Value>, prev: Option<&Map<String, Value>>) {
        if matches!(ty, "User" | "Contact" | "Lead") {
            let name = [s(m, "FirstName"), s(m, "LastName")].into_iter().flatten().collect::<Vec<_>>().join(" ");
            m.insert("Name".into(), if name.is_empty() { Value::Null } else { Value::String(name) });
        }
        if ty == "Opportunity" {
            let stage = s(m, "StageName").unwrap_or("").to_string();
            m.insert("IsClosed".into(), Value::Bool(stage.starts_with("Closed")));
            m.insert("IsWon".into(), Value::Bool(stage == "Closed Won"));
        }
        if ty == "Task" {
            let closed = s(m, "Status") == Some("Completed");
            let was_closed = prev.is_some_and(|p| p.get("IsClosed") == Some(&Value::Bool(true)));
            m.insert("IsClosed".into(), Value::Bool(closed));
            if !closed {
                m.insert("CompletedDateTime".into(), Value::Null);
            } else if !was_closed {
                m.insert("CompletedDateTime".into(), Value::String(fmt_dt(cx.now)));
            }
            m.insert("IsHighPriority".into(), Value::Bool(s(m, "Priority") == Some("High")));
            let what = s(m, "WhatId").map(str::to_string);
            let who = s(m, "WhoId").map(str::to_string);
            let mut account = None;
            if let Some(w) = what.as_deref() {
                if w.starts_with("001") {
                    account = Some(w.to_string());
                } else if let Some(o) = self.get("Opportunity", w) {
                    account = s(&o.fields, "AccountId").map(str::to_string);
                }
            }
            if account.is_none()
                && let Some(c) = who.as_deref().and_then(|w| self.get("Contact", w))
            {
                account = s(&c.fields, "AccountId").map(str::to_string);
            }
            m.insert("AccountId".into(), account.map_or(Value::Null, Value::String));
        }
        let now = Value::String(fmt_dt(cx.now));
        m.insert("LastModifiedDate".into(), now.clone());
        m.insert("SystemModstamp".into(), now);
        m.insert("LastModifiedById".into(), Value::String(cx.user.to_string()));
    }

    fn defaults(cx: &WriteCtx<'_>, obj: &ObjDef) -> Map<String, Value> {
        let mut m = Map::new();
        for f in &obj.fields {
            m.insert(f.name.clone(), if f.ty == FType::Bool { Value::Bool(false) } else { Value::Null });
        }
        let mut set = |k: &str, v: Value| {
            if m.contains_key(k) {
                m.insert(k.to_string(), v);
            }
        };
        if obj.field("OwnerId").is_some_and(|f| f.access == Access::Write) {
            set("OwnerId", Value::String(cx.user.to_string()));
        }
        match obj.name {
            "Lead" => set("Status", Value::String("Open - Not Contacted".into())),
            "Task" => {
                set("Status", Value::String("Not Started".into()));
                set("Priority", Value::String("Normal".into()));
                set("TaskSubtype", Value::String("Task".into()));
            }
            "User" => set("IsActive", Value::Bool(true)),
            "Group" => set("Type", Value::String("Queue".into())),
            _ => {}
        }
        let now = Value::String(fmt_dt(cx.now));
        set("CreatedDate", now);
        set("CreatedById", Value::String(cx.user.to_string()));
        m
    }

    /// Creates a record, minting an id unless `forced_id` is given (seeding).
    pub(crate) fn create(
        &mut self,
        cx: &WriteCtx<'_>,
        ty: &str,
        input: &Map<String, Value>,
        forced_id: Option<&str>,
    ) -> Result<String, E> {
        let obj = cx.schema.obj(ty).ok_or_else(E::not_found)?;
        let mut m = Self::defaults(cx, obj);
        let mut touched = Self::apply_input(obj, &mut m, input, true)?;
        if obj.field("OwnerId").is_some() {
            touched.push("OwnerId".into());
        }
        self.check_required_unique(obj, &m, None)?;
        self.check_refs(cx, obj, &m, &touched)?;
        let id = match forced_id.and_then(sfid::to18) {
            Some(id) => id,
            None => self.mint(obj.prefix),
        };
        m.insert("Id".into(), Value::String(id.clone()));
        self.derive(cx, obj.name, &mut m, None);
        self.put(obj.name, id.clone(), Rec { fields: m, deleted_at: None });
        Ok(id)
    }

    fn live<'o>(&'o self, obj: &ObjDef, id: &str) -> Result<(String, &'o Rec), E> {
        let id18 = sfid::to18(id).filter(|i| i.starts_with(obj.prefix)).ok_or_else(E::not_found)?;
        let rec = self.get(obj.name, &id18).ok_or_else(E::not_found)?;
        if rec.deleted_at.is_some() {
            return Err(E::entity_deleted());
        }
        Ok((id18, rec))
    }

    /// Updates a record.
    pub(crate) fn update(
        &mut self,
        cx: &WriteCtx<'_>,
        ty: &str,
        id: &str,
        input: &Map<String, Value>,
    ) -> Result<(), E> {
        let obj = cx.schema.obj(ty).ok_or_else(E::not_found)?;
        let (id18, rec) = self.live(obj, id)?;
        if obj.name == "Lead" && rec.fields.get("IsConverted") == Some(&Value::Bool(true)) {
            return Err(E::bad("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead"));
        }
        let prev = rec.fields.clone();
        let mut m = prev.clone();
        let touched = Self::apply_input(obj, &mut m, input, false)?;
        self.check_required_unique(obj, &m, Some(&id18))?;
        self.check_refs(cx, obj, &m, &touched)?;
        self.derive(cx, obj.name, &mut m, Some(&prev));
        self.put(obj.name, id18, Rec { fields: m, deleted_at: None });
        Ok(())
    }

    /// Soft-deletes a record.
    pub(crate) fn delete(&mut self, cx: &WriteCtx<'_>, ty: &str, id: &str) -> Result<(), E> {
        let obj = cx.schema.obj(ty).ok_or_else(E::not_found)?;
        if !obj.deletable {
            return Err(E::bad("INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights on object id"));
        }
        let (id18, rec) = self.live(obj, id)?;
        let mut rec = rec.clone();
        let now = Value::String(fmt_dt(cx.now));
        rec.fields.insert("IsDeleted".into(), Value::Bool(true));
        rec.fields.insert("SystemModstamp".into(), now.clone());
        rec.fields.insert("LastModifiedDate".into(), now);
        rec.deleted_at = Some(cx.now);
        self.put(obj.name, id18, rec);
        Ok(())
    }

    /// Overrides the audit timestamps of a record (seeding history).
    pub(crate) fn set_times(&mut self, ty: &str, id: &str, created: DateTime<Utc>, modified: DateTime<Utc>) {
        const STAMPS: [&str; 3] = ["CreatedDate", "LastModifiedDate", "SystemModstamp"];
        let Some(id) = sfid::to18(id) else { return };
        let Some((ty, map)) = self.recs.iter_mut().find(|(k, _)| **k == ty) else { return };
        let Some(rec) = map.get_mut(&id) else { return };
        let indexed = self.index.get(ty).is_some_and(|l| l.iter().any(|f| STAMPS.contains(&f.field.as_str())));
        let before = indexed.then(|| rec.clone());
        rec.fields.insert("CreatedDate".into(), Value::String(fmt_dt(created)));
        rec.fields.insert("LastModifiedDate".into(), Value::String(fmt_dt(modified)));
        rec.fields.insert("SystemModstamp".into(), Value::String(fmt_dt(modified)));
        if let Some(before) = before {
            Self::reindex(&mut self.index, ty, &id, Some(&before), Some(rec));
        }
    }

    /// Ids of live records whose field matches a value (case-insensitive).
    pub(crate) fn find_by(&self, ty: &str, field: &str, value: &str) -> Vec<String> {
        if let Some(post) = self.posting(ty, field, &value.to_lowercase()) {
            let Some(m) = self.map(ty) else { return Vec::new() };
            let mut ids: Vec<String> = post
                .into_iter()
                .flat_map(Post::ids)
                .map(id_str)
                .filter(|id| m.get(*id).is_some_and(|r| r.deleted_at.is_none()))
                .map(str::to_string)
                .collect();
            ids.sort();
            return ids;
        }
        self.all(ty)
            .filter(|r| r.deleted_at.is_none())
            .filter(|r| r.fields.get(field).and_then(text_of).is_some_and(|x| x.eq_ignore_ascii_case(value)))
            .filter_map(|r| s(&r.fields, "Id").map(str::to_string))
            .collect()
    }

    /// Converts a lead (contact and account merged when given, optional opportunity).
    pub(crate) fn convert_lead(
        &mut self,
        cx: &WriteCtx<'_>,
        lead_id: &str,
        contact_id: Option<&str>,
        account_id: Option<&str>,
        create_opportunity: bool,
    ) -> Result<ConvertResult, E> {
        let lead_obj = cx.schema.obj("Lead").ok_or_else(E::not_found)?;
        let (lead_id, lead) = self.live(lead_obj, lead_id)?;
        let lead = lead.fields.clone();
        if lead.get("IsConverted") == Some(&Value::Bool(true)) {
            return Err(E::bad("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead"));
        }
        let owner = s(&lead, "OwnerId").filter(|o| o.starts_with("005")).unwrap_or(cx.user).to_string();
        let pick = |keys: &[&str]| {
            let mut m = Map::new();
            for k in keys {
                if let Some(v) = lead.get(*k).filter(|v| !v.is_null() && **v != Value::Bool(false)) {
                    m.insert((*k).to_string(), v.clone());
                }
            }
            m
        };
        let account_id = match account_id {
            Some(a) => {
                let obj = cx.schema.obj("Account").ok_or_else(E::not_found)?;
                self.live(obj, a)
                    .map_err(|_| {
                        E::bad("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id").with_fields(["accountId"])
                    })?
                    .0
            }
            None => {
                let mut m = Map::new();
                m.insert("Name".into(), lead.get("Company").cloned().unwrap_or(Value::Null));
                m.insert("OwnerId".into(), Value::String(owner.clone()));
                self.create(cx, "Account", &m, None)?
            }
        };
        let contact_keys =
            ["FirstName", "LastName", "Email", "Title", "Phone", "LeadSource", "HasOptedOutOfEmail", "DoNotCall"];
        let contact_id = match contact_id {
            Some(c) => {
                let obj = cx.schema.obj("Contact").ok_or_else(E::not_found)?;
                let (cid, rec) = self.live(obj, c).map_err(|_| {
                    E::bad("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id").with_fields(["contactId"])
                })?;
                let existing = rec.fields.clone();
                let mut fill = Map::new();
                for (k, v) in pick(&contact_keys) {
                    if existing.get(&k).is_none_or(|x| x.is_null() || *x == Value::Bool(false)) {
                        fill.insert(k, v);
                    }
                }
                if existing.get("AccountId").is_none_or(Value::is_null) {
                    fill.insert("AccountId".into(), Value::String(account_id.clone()));
                }
                self.update(cx, "Contact", &cid, &fill)?;
                cid
            }
            None => {
                let mut m = pick(&contact_keys);
                m.insert("AccountId".into(), Value::String(account_id.clone()));
                m.insert("OwnerId".into(), Value::String(owner.clone()));
                self.create(cx, "Contact", &m, None)?
            }
        };
        let opportunity_id = if create_opportunity {
            let mut m = Map::new();
            m.insert("Name".into(), Value::String(format!("{}-", s(&lead, "Company").unwrap_or("Opportunity"))));
            m.insert("StageName".into(), Value::String("Prospecting".into()));
            m.insert("CloseDate".into(), Value::String((cx.now + Duration::days(30)).format("%Y-%m-%d").to_string()));
            m.insert("AccountId".into(), Value::String(account_id.clone()));
            m.insert("OwnerId".into(), Value::String(owner.clone()));
            let opp = self.create(cx, "Opportunity", &m, None)?;
            let mut r = Map::new();
            r.insert("OpportunityId".into(), Value::String(opp.clone()));
            r.insert("ContactId".into(), Value::String(contact_id.clone()));
            r.insert("IsPrimary".into(), Value::Bool(true));
            self.create(cx, "OpportunityContactRole", &r, None)?;
            Some(opp)
        } else {
            None
        };
        // Activities follow the person to the contact.
        let tasks: Vec<String> = self.find_by("Task", "WhoId", &lead_id);
        for t in tasks {
            let mut m = Map::new();
            m.insert("WhoId".into(), Value::String(contact_id.clone()));
            self.update(cx, "Task", &t, &m)?;
        }
        if let Some(rec) = self.get("Lead", &lead_id).cloned() {
            let mut m = rec.fields.clone();
            m.insert("IsConverted".into(), Value::Bool(true));
            m.insert("ConvertedDate".into(), Value::String(cx.now.format("%Y-%m-%d").to_string()));
            m.insert("ConvertedAccountId".into(), Value::String(account_id.clone()));
            m.insert("ConvertedContactId".into(), Value::String(contact_id.clone()));
            m.insert("ConvertedOpportunityId".into(), opportunity_id.clone().map_or(Value::Null, Value::String));
            self.derive(cx, "Lead", &mut m, Some(&rec.fields));
            self.put("Lead", lead_id, Rec { fields: m, deleted_at: None });
        }
        Ok(ConvertResult { contact_id, account_id, opportunity_id })
    }
}
