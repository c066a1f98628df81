//! A SOQL subset: lexer, parser, binder (field validation) and evaluator.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering as AtomicOrdering;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::errors::SalesforceApiError as E;
use super::schema::{ChildRel, FType, ObjDef, Schema};
use super::store::{Id18, Org, Post, Rec, fmt_dt, id_str, index_key, parse_dt};
use crate::sfid;

/// Marks an escaped `%` inside a string literal (literal in LIKE).
const LIT_PERCENT: char = '\u{E000}';
/// Marks an escaped `_` inside a string literal (literal in LIKE).
const LIT_UNDERSCORE: char = '\u{E001}';

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    Sym(&'static str),
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{s}"),
            Tok::Str(s) => write!(f, "'{s}'"),
            Tok::Num(n) => write!(f, "{n}"),
            Tok::Date(d) => write!(f, "{d}"),
            Tok::DateTime(d) => write!(f, "{}", d.to_rfc3339()),
            Tok::Sym(s) => write!(f, "{s}"),
        }
    }
}

fn malformed(msg: impl Into<String>) -> E {
    E::malformed_query(msg)
}

fn lex(q: &str) -> Result<Vec<Tok>, E> {
    let c: Vec<char> = q.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let is_date_at = |i: usize| {
        let pat = "dddd-dd-dd";
        c.len() >= i + 10
            && pat.chars().enumerate().all(|(k, p)| if p == 'd' { c[i + k].is_ascii_digit() } else { c[i + k] == '-' })
    };
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch.is_ascii_alphabetic() || ch == '_' {
            let st = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[st..i].iter().collect()));
        } else if ch == '\'' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&x) = c.get(i) else {
                    return Err(malformed(format!("unterminated string literal in: {q}")));
                };
                i += 1;
                match x {
                    '\'' => break,
                    '\\' => {
                        let Some(&e) = c.get(i) else {
                            return Err(malformed("unterminated string literal"));
                        };
                        i += 1;
                        match e {
                            'n' | 'N' => s.push('\n'),
                            'r' | 'R' => s.push('\r'),
                            't' | 'T' => s.push('\t'),
                            'b' | 'B' => s.push('\u{8}'),
                            'f' | 'F' => s.push('\u{c}'),
                            '"' => s.push('"'),
                            '\'' => s.push('\''),
                            '\\' => s.push('\\'),
                            '%' => s.push(LIT_PERCENT),
                            '_' => s.push(LIT_UNDERSCORE),
                            'u' => {
                                let hex: String = c.get(i..i + 4).map(|h| h.iter().collect()).unwrap_or_default();
                                let v = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                                let Some(v) = v.filter(|_| hex.len() == 4) else {
                                    return Err(malformed(format!(
                                        "Invalid string literal. Illegal unicode escape \\u{hex}"
                                    )));
                                };
                                s.push(v);
                                i += 4;
                            }
                            other => {
                                return Err(malformed(format!(
                                    "Invalid string literal '{s}\\{other}...'. Illegal escape sequence '\\{other}'"
                                )));
                            }
                        }
                    }
                    x => s.push(x),
                }
            }
            out.push(Tok::Str(s));
        } else if ch.is_ascii_digit() || (ch == '-' && c.get(i + 1).is_some_and(char::is_ascii_digit)) {
            if ch != '-' && is_date_at(i) {
                let st = i;
                i += 10;
                if c.get(i) == Some(&'T') {
                    while i < c.len() && (c[i].is_ascii_digit() || matches!(c[i], 'T' | ':' | '.' | '+' | '-' | 'Z')) {
                        i += 1;
                    }
                    let s: String = c[st..i].iter().collect();
                    let has_zone = s[10..].contains(['Z', '+']) || s[11..].contains('-');
                    let t = parse_dt(&s)
                        .filter(|_| has_zone)
                        .ok_or_else(|| malformed(format!("line 1:{st} no viable alternative at character '{s}'")))?;
                    out.push(Tok::DateTime(t));
                } else {
                    let s: String = c[st..i].iter().collect();
                    let d = NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                        .map_err(|_| malformed(format!("invalid date: {s}")))?;
                    out.push(Tok::Date(d));
                }
            } else {
                let st = i;
                i += 1;
                while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                    i += 1;
                }
                let s: String = c[st..i].iter().collect();
                let n = s.parse::<f64>().map_err(|_| malformed(format!("unexpected token: '{s}'")))?;
                out.push(Tok::Num(n));
            }
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let sym = match two.as_str() {
                "!=" => Some("!="),
                "<>" => Some("!="),
                "<=" => Some("<="),
                ">=" => Some(">="),
                _ => None,
            };
            if let Some(s) = sym {
                out.push(Tok::Sym(s));
                i += 2;
                continue;
            }
            let s = match ch {
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '=' => "=",
                '<' => "<",
                '>' => ">",
                ':' => ":",
                '.' => ".",
                other => return Err(malformed(format!("line 1:{i} no viable alternative at character '{other}'"))),
            };
            out.push(Tok::Sym(s));
            i += 1;
        }
    }
    Ok(out)
}

/// A resolved field reference.
#[derive(Debug, Clone)]
pub(crate) enum FRef {
    /// A field of the queried record.
    Own { name: String, ty: FType },
    /// A field of a parent record, through one to five reference fields (`Account.Owner.Email`:
    /// hops `Account` via `AccountId`, then `Owner` via `OwnerId`).
    Parent { hops: Vec<Hop>, name: String, ty: FType },
}

/// One child-to-parent step of a field path: the relationship name and its reference field.
#[derive(Debug, Clone)]
pub(crate) struct Hop {
    rel: String,
    via: String,
}

impl FRef {
    fn ty(&self) -> &FType {
        match self {
            FRef::Own { ty, .. } | FRef::Parent { ty, .. } => ty,
        }
    }
}

/// A field path as written, resolved by the binder.
#[derive(Debug, Clone)]
pub(crate) struct Path {
    parts: Vec<String>,
    r: Option<FRef>,
    /// The alias of a grouped field in an aggregate query (`LeadSource src`).
    alias: Option<String>,
}

impl Path {
    /// The resolved field as a comparable key (`owner.name`), to match a selected field against
    /// the `GROUP BY` list.
    fn key(&self) -> Option<String> {
        match &self.r {
            Some(FRef::Own { name, .. }) => Some(name.to_lowercase()),
            Some(FRef::Parent { hops, name, .. }) => Some(
                hops.iter().map(|h| h.rel.as_str()).chain([name.as_str()]).collect::<Vec<_>>().join(".").to_lowercase(),
            ),
            None => None,
        }
    }

    /// The field name an aggregate result uses for this grouped field: its alias, else the
    /// last field of the path (`Owner.Name` → `Name`).
    fn result_name(&self) -> String {
        if let Some(a) = &self.alias {
            return a.clone();
        }
        match &self.r {
            Some(FRef::Own { name, .. } | FRef::Parent { name, .. }) => name.clone(),
            None => self.parts.last().cloned().unwrap_or_default(),
        }
    }
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggFn {
    Count,
    CountDistinct,
    Min,
    Max,
    Sum,
    Avg,
}

impl AggFn {
    fn from_name(s: &str) -> Option<AggFn> {
        Some(match s.to_ascii_uppercase().as_str() {
            "COUNT" => AggFn::Count,
            "COUNT_DISTINCT" => AggFn::CountDistinct,
            "MIN" => AggFn::Min,
            "MAX" => AggFn::Max,
            "SUM" => AggFn::Sum,
            "AVG" => AggFn::Avg,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            AggFn::Count => "COUNT",
            AggFn::CountDistinct => "COUNT_DISTINCT",
            AggFn::Min => "MIN",
            AggFn::Max => "MAX",
            AggFn::Sum => "SUM",
            AggFn::Avg => "AVG",
        }
    }
}

/// An aggregate expression (`COUNT(Email)`, `MAX(CreatedDate)`).
#[derive(Debug, Clone)]
struct Agg {
    func: AggFn,
    arg: Path,
}

impl Agg {
    /// The type of the aggregate's value, for `HAVING` literals and ordering.
    fn ty(&self) -> FType {
        match self.func {
            AggFn::Count | AggFn::CountDistinct => FType::Int,
            AggFn::Avg => FType::Num,
            AggFn::Sum => match self.arg.r.as_ref().map(FRef::ty) {
                Some(FType::Int) => FType::Int,
                _ => FType::Num,
            },
            AggFn::Min | AggFn::Max => self.arg.r.as_ref().map_or(FType::Any, |r| r.ty().clone()),
        }
    }

    fn text(&self) -> String {
        format!("{}({})", self.func.name(), self.arg.parts.join("."))
    }
}

/// An operand of a `HAVING` condition: an aggregate or a grouped field.
#[derive(Debug, Clone)]
enum HExpr {
    Agg(Agg),
    Field(Path),
}

/// A `HAVING` condition, evaluated per group.
#[derive(Debug, Clone)]
enum HCond {
    And(Box<HCond>, Box<HCond>),
    Or(Box<HCond>, Box<HCond>),
    Not(Box<HCond>),
    Cmp(HExpr, Op, Lit),
    In(HExpr, bool, Vec<Lit>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Null,
    Bool(bool),
    Str(String),
    Num(f64),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    /// A date range literal (`TODAY`, `LAST_N_DAYS:n`): [start, end).
    Range(DateTime<Utc>, DateTime<Utc>),
}

#[derive(Debug, Clone)]
enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp(Path, Op, Lit),
    In(Path, bool, Vec<Lit>),
    /// A semi-join (`IN (SELECT …)`) or, negated, an anti-join: resolved to [`Cond::In`] over
    /// the subquery's ids before the rows are examined.
    InQuery(Path, bool, Box<Query>),
    Like(Path, String),
}

#[derive(Debug, Clone)]
enum Item {
    Field(Path),
    Count,
    /// An aggregate function with its alias.
    Agg(Agg, Option<String>),
    Sub(Box<Query>, Option<ChildRel>),
}

#[derive(Debug, Clone)]
struct OrderKey {
    path: Path,
    /// Set when the key is an aggregate (`ORDER BY COUNT(Id) DESC`); `path` is then its argument.
    agg: Option<Agg>,
    desc: bool,
    nulls_last: bool,
}

/// A parsed (and, after [`parse`], bound) query.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    select: Vec<Item>,
    from: String,
    cond: Option<Cond>,
    group: Vec<Path>,
    having: Option<HCond>,
    order: Vec<OrderKey>,
    limit: Option<usize>,
    offset: Option<usize>,
}

impl Query {
    /// True for `SELECT COUNT() …`.
    pub(crate) fn is_count(&self) -> bool {
        self.select.iter().any(|i| matches!(i, Item::Count))
    }

    /// True for a query answered with `AggregateResult` rows: one with `GROUP BY` or an
    /// aggregate function in its `SELECT` list (`COUNT()` alone is not one).
    pub(crate) fn is_aggregate(&self) -> bool {
        !self.is_count() && (!self.group.is_empty() || self.select.iter().any(|i| matches!(i, Item::Agg(..))))
    }
}

struct Parser<'a> {
    t: Vec<Tok>,
    i: usize,
    now: DateTime<Utc>,
    src: &'a str,
}

const KEYWORDS: &[&str] = &[
    "SELECT", "FROM", "WHERE", "ORDER", "BY", "LIMIT", "OFFSET", "AND", "OR", "NOT", "IN", "LIKE", "ASC", "DESC",
    "NULLS", "NULL", "TRUE", "FALSE", "GROUP", "HAVING",
];

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }

    fn unexpected(&self) -> E {
        match self.peek() {
            Some(t) => malformed(format!("\n{}\nunexpected token: '{t}'", self.src)),
            None => malformed(format!("\n{}\nunexpected end of query", self.src)),
        }
    }

    fn kw(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(k))
    }

    fn eat_kw(&mut self, k: &str) -> bool {
        if self.kw(k) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, k: &str) -> Result<(), E> {
        if self.eat_kw(k) { Ok(()) } else { Err(self.unexpected()) }
    }

    fn sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == s)
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if self.sym(s) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), E> {
        if self.eat_sym(s) { Ok(()) } else { Err(self.unexpected()) }
    }

    fn ident(&mut self) -> Result<String, E> {
        match self.peek() {
            Some(Tok::Ident(s)) if !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(s)) => {
                let s = s.clone();
                self.i += 1;
                Ok(s)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn path(&mut self) -> Result<Path, E> {
        let mut parts = vec![self.ident()?];
        while self.eat_sym(".") {
            parts.push(self.ident()?);
        }
        Ok(Path { parts, r: None, alias: None })
    }

    fn query(&mut self, sub: bool) -> Result<Query, E> {
        self.expect_kw("SELECT")?;
        let mut select = Vec::new();
        loop {
            if self.kw("COUNT")
                && matches!(self.t.get(self.i + 1), Some(Tok::Sym("(")))
                && matches!(self.t.get(self.i + 2), Some(Tok::Sym(")")))
            {
                self.i += 3;
                select.push(Item::Count);
            } else if let Some(agg) = self.agg()? {
                let alias = self.alias()?;
                select.push(Item::Agg(agg, alias));
            } else if self.sym("(") {
                if sub {
                    return Err(self.unexpected());
                }
                self.i += 1;
                let q = self.query(true)?;
                self.expect_sym(")")?;
                select.push(Item::Sub(Box::new(q), None));
            } else {
                let mut p = self.path()?;
                p.alias = self.alias()?;
                select.push(Item::Field(p));
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        if select.iter().any(|i| matches!(i, Item::Count)) && select.len() > 1 {
            return Err(malformed("COUNT() must be the only element in the SELECT list."));
        }
        self.expect_kw("FROM")?;
        let from = self.ident()?;
        let cond = if self.eat_kw("WHERE") { Some(self.or()?) } else { None };
        let mut group = Vec::new();
        if self.eat_kw("GROUP") {
            self.expect_kw("BY")?;
            if self.kw("ROLLUP") || self.kw("CUBE") {
                return Err(malformed("GROUP BY ROLLUP and GROUP BY CUBE are not supported by this emulator"));
            }
            loop {
                group.push(self.path()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let having = if self.eat_kw("HAVING") { Some(self.h_or()?) } else { None };
        let mut order = Vec::new();
        if self.eat_kw("ORDER") {
            self.expect_kw("BY")?;
            loop {
                let agg = self.agg()?;
                let path = match &agg {
                    Some(a) => a.arg.clone(),
                    None => self.path()?,
                };
                let desc = if self.eat_kw("DESC") {
                    true
                } else {
                    self.eat_kw("ASC");
                    false
                };
                let nulls_last = if self.eat_kw("NULLS") {
                    if self.eat_kw("LAST") {
                        true
                    } else {
                        self.expect_kw("FIRST")?;
                        false
                    }
                } else {
                    desc
                };
                order.push(OrderKey { path, agg, desc, nulls_last });
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let mut limit = None;
        let mut offset = None;
        if self.eat_kw("LIMIT") {
            limit = Some(self.count_arg()?);
        }
        if self.eat_kw("OFFSET") {
            let n = self.count_arg()?;
            if n > 2000 {
                return Err(E::bad(
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    format!("Maximum SOQL offset allowed is 2000 (got {n})"),
                ));
            }
            offset = Some(n);
        }
        if !sub && self.i < self.t.len() {
            return Err(self.unexpected());
        }
        Ok(Query { select, from, cond, group, having, order, limit, offset })
    }

    /// An aggregate function call (`MAX(CreatedDate)`) if one starts here; `COUNT()` is not one.
    fn agg(&mut self) -> Result<Option<Agg>, E> {
        let func = match self.peek() {
            Some(Tok::Ident(s)) if matches!(self.t.get(self.i + 1), Some(Tok::Sym("("))) => AggFn::from_name(s),
            _ => None,
        };
        let Some(func) = func else { return Ok(None) };
        self.i += 2;
        let arg = self.path()?;
        self.expect_sym(")")?;
        Ok(Some(Agg { func, arg }))
    }

    /// An alias after a select item: an identifier that is not a keyword.
    fn alias(&mut self) -> Result<Option<String>, E> {
        match self.peek() {
            Some(Tok::Ident(s)) if !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(s)) => self.ident().map(Some),
            _ => Ok(None),
        }
    }

    /// Parses `next (kw next)*`, folding to the left with `join`: the shape of every `OR` and
    /// `AND` chain, in `WHERE` and in `HAVING`.
    fn chain<T>(
        &mut self,
        kw: &str,
        next: fn(&mut Self) -> Result<T, E>,
        join: fn(Box<T>, Box<T>) -> T,
    ) -> Result<T, E> {
        let mut l = next(self)?;
        while self.eat_kw(kw) {
            l = join(Box::new(l), Box::new(next(self)?));
        }
        Ok(l)
    }

    /// The literals of an `IN (…)` list after its `(`, through the closing `)`.
    fn lit_list(&mut self) -> Result<Vec<Lit>, E> {
        let mut vals = vec![self.lit()?];
        while self.eat_sym(",") {
            vals.push(self.lit()?);
        }
        self.expect_sym(")")?;
        Ok(vals)
    }

    /// A comparison operator (`=`, `!=`, `<`, `>`, `<=`, `>=`), consumed.
    fn cmp_op(&mut self) -> Result<Op, E> {
        let op = match self.peek() {
            Some(Tok::Sym("=")) => Op::Eq,
            Some(Tok::Sym("!=")) => Op::Ne,
            Some(Tok::Sym("<")) => Op::Lt,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym(">=")) => Op::Ge,
            _ => return Err(self.unexpected()),
        };
        self.i += 1;
        Ok(op)
    }

    fn h_or(&mut self) -> Result<HCond, E> {
        self.chain("OR", Self::h_and, HCond::Or)
    }

    fn h_and(&mut self) -> Result<HCond, E> {
        self.chain("AND", Self::h_not, HCond::And)
    }

    fn h_not(&mut self) -> Result<HCond, E> {
        if self.eat_kw("NOT") {
            return Ok(HCond::Not(Box::new(self.h_not()?)));
        }
        if self.eat_sym("(") {
            let c = self.h_or()?;
            self.expect_sym(")")?;
            return Ok(c);
        }
        let expr = match self.agg()? {
            Some(a) => HExpr::Agg(a),
            None => HExpr::Field(self.path()?),
        };
        let neg = self.eat_kw("NOT");
        if neg || self.kw("IN") {
            self.expect_kw("IN")?;
            self.expect_sym("(")?;
            return Ok(HCond::In(expr, neg, self.lit_list()?));
        }
        let op = self.cmp_op()?;
        Ok(HCond::Cmp(expr, op, self.lit()?))
    }

    fn count_arg(&mut self) -> Result<usize, E> {
        match self.peek() {
            Some(Tok::Num(n)) if *n >= 0.0 && n.fract() == 0.0 => {
                let n = *n as usize;
                self.i += 1;
                Ok(n)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn or(&mut self) -> Result<Cond, E> {
        self.chain("OR", Self::and, Cond::Or)
    }

    fn and(&mut self) -> Result<Cond, E> {
        self.chain("AND", Self::not, Cond::And)
    }

    fn not(&mut self) -> Result<Cond, E> {
        if self.eat_kw("NOT") {
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        if self.eat_sym("(") {
            let c = self.or()?;
            self.expect_sym(")")?;
            return Ok(c);
        }
        let path = self.path()?;
        if self.eat_kw("LIKE") {
            return match self.peek() {
                Some(Tok::Str(s)) => {
                    let s = s.clone();
                    self.i += 1;
                    Ok(Cond::Like(path, s))
                }
                _ => Err(self.unexpected()),
            };
        }
        let neg = self.eat_kw("NOT");
        if neg || self.kw("IN") {
            self.expect_kw("IN")?;
            self.expect_sym("(")?;
            if self.kw("SELECT") {
                let sub = self.query(true)?;
                self.expect_sym(")")?;
                return Ok(Cond::InQuery(path, neg, Box::new(sub)));
            }
            return Ok(Cond::In(path, neg, self.lit_list()?));
        }
        let op = self.cmp_op()?;
        Ok(Cond::Cmp(path, op, self.lit()?))
    }

    fn lit(&mut self) -> Result<Lit, E> {
        let t = self.peek().cloned().ok_or_else(|| self.unexpected())?;
        self.i += 1;
        let today = self.now.date_naive().and_hms_opt(0, 0, 0).map(|d| d.and_utc()).unwrap_or(self.now);
        Ok(match t {
            Tok::Str(s) => Lit::Str(s),
            Tok::Num(n) => Lit::Num(n),
            Tok::Date(d) => Lit::Date(d),
            Tok::DateTime(d) => Lit::DateTime(d),
            Tok::Ident(s) => match s.to_ascii_uppercase().as_str() {
                "NULL" => Lit::Null,
                "TRUE" => Lit::Bool(true),
                "FALSE" => Lit::Bool(false),
                upper => match DateLit::parse(upper) {
                    Some(dl) => {
                        let n = if dl.takes_n() {
                            self.expect_sym(":")?;
                            i64::try_from(self.count_arg()?).unwrap_or(i64::MAX)
                        } else {
                            dl.fixed.unwrap_or(0)
                        };
                        let (s, e) = dl
                            .range(today.date_naive(), n)
                            .ok_or_else(|| malformed(format!("\n{}\nInvalid date literal: {upper}:{n}", self.src)))?;
                        Lit::Range(midnight(s), midnight(e))
                    }
                    None => {
                        self.i -= 1;
                        return Err(self.unexpected());
                    }
                },
            },
            Tok::Sym(_) => {
                self.i -= 1;
                return Err(self.unexpected());
            }
        })
    }
}

/// The calendar unit of a date literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

/// Which period of a unit a date literal names, relative to the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rel {
    This,
    Last,
    Next,
    /// `LAST_N_…:n`: the n whole units before the current one (days: the n days before today,
    /// and today).
    LastN,
    /// `NEXT_N_…:n`: the n whole units after the current one.
    NextN,
    /// `N_…_AGO:n`: the single unit n units before the current one.
    Ago,
}

/// A relative date literal (`THIS_WEEK`, `LAST_N_MONTHS:3`, `N_DAYS_AGO:2`).
///
/// The emulated org's time zone is UTC and its locale starts weeks on Sunday (the default US
/// locale); its fiscal year is the calendar year (the default), so the `…_FISCAL_…` literals equal
/// their calendar twins.
#[derive(Debug, Clone, Copy)]
struct DateLit {
    rel: Rel,
    unit: Unit,
    /// The `n` built into the name (`LAST_90_DAYS`).
    fixed: Option<i64>,
}

impl DateLit {
    fn parse(name: &str) -> Option<DateLit> {
        let (rel, unit) = match name {
            "TODAY" => (Rel::This, Unit::Day),
            "YESTERDAY" => (Rel::Last, Unit::Day),
            "TOMORROW" => (Rel::Next, Unit::Day),
            "LAST_90_DAYS" => return Some(DateLit { rel: Rel::LastN, unit: Unit::Day, fixed: Some(90) }),
            "NEXT_90_DAYS" => return Some(DateLit { rel: Rel::NextN, unit: Unit::Day, fixed: Some(90) }),
            _ => {
                let unit_of = |u: &str| match u.trim_start_matches("FISCAL_") {
                    "DAY" | "DAYS" => Some(Unit::Day),
                    "WEEK" | "WEEKS" => Some(Unit::Week),
                    "MONTH" | "MONTHS" => Some(Unit::Month),
                    "QUARTER" | "QUARTERS" => Some(Unit::Quarter),
                    "YEAR" | "YEARS" => Some(Unit::Year),
                    _ => None,
                };
                let plural = |u: &str| u.ends_with('S');
                if let Some(u) = name.strip_prefix("LAST_N_").filter(|u| plural(u)) {
                    (Rel::LastN, unit_of(u)?)
                } else if let Some(u) = name.strip_prefix("NEXT_N_").filter(|u| plural(u)) {
                    (Rel::NextN, unit_of(u)?)
                } else if let Some(u) = name.strip_prefix("N_").and_then(|u| u.strip_suffix("_AGO")) {
                    (Rel::Ago, unit_of(u).filter(|_| plural(u))?)
                } else if let Some(u) = name.strip_prefix("THIS_").filter(|u| !plural(u)) {
                    (Rel::This, unit_of(u).filter(|x| *x != Unit::Day)?)
                } else if let Some(u) = name.strip_prefix("LAST_").filter(|u| !plural(u)) {
                    (Rel::Last, unit_of(u).filter(|x| *x != Unit::Day)?)
                } else if let Some(u) = name.strip_prefix("NEXT_").filter(|u| !plural(u)) {
                    (Rel::Next, unit_of(u).filter(|x| *x != Unit::Day)?)
                } else {
                    return None;
                }
            }
        };
        Some(DateLit { rel, unit, fixed: None })
    }

    /// Whether the literal takes `:n`.
    fn takes_n(self) -> bool {
        self.fixed.is_none() && matches!(self.rel, Rel::LastN | Rel::NextN | Rel::Ago)
    }

    /// The literal's dates as [start, end), for `today` in the org's time zone.
    fn range(self, today: NaiveDate, n: i64) -> Option<(NaiveDate, NaiveDate)> {
        let start = unit_start(today, self.unit);
        let at = |k: i64| shift(start, self.unit, k);
        Some(match (self.rel, self.unit) {
            (Rel::This, _) => (start, at(1)?),
            (Rel::Last, _) => (at(-1)?, start),
            (Rel::Next, _) => (at(1)?, at(2)?),
            // LAST_N_DAYS:n includes today; the other units stop before the current one.
            (Rel::LastN, Unit::Day) => (at(-n)?, at(1)?),
            (Rel::LastN, _) => (at(-n)?, start),
            (Rel::NextN, _) => (at(1)?, at(n + 1)?),
            (Rel::Ago, _) => (at(-n)?, at(1 - n)?),
        })
    }
}

/// The first day of the unit that holds `d` (weeks start on Sunday; quarters in January, April,
/// July and October).
fn unit_start(d: NaiveDate, unit: Unit) -> NaiveDate {
    use chrono::Datelike;
    match unit {
        Unit::Day => d,
        Unit::Week => d - Duration::days(i64::from(d.weekday().num_days_from_sunday())),
        Unit::Month => d.with_day(1).unwrap_or(d),
        Unit::Quarter => NaiveDate::from_ymd_opt(d.year(), (d.month() - 1) / 3 * 3 + 1, 1).unwrap_or(d),
        Unit::Year => NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap_or(d),
    }
}

/// `d` moved by `k` units (`d` is the first day of a unit).
fn shift(d: NaiveDate, unit: Unit, k: i64) -> Option<NaiveDate> {
    let months = |m: i64| {
        let abs = chrono::Months::new(u32::try_from(m.unsigned_abs()).ok()?);
        if m >= 0 { d.checked_add_months(abs) } else { d.checked_sub_months(abs) }
    };
    match unit {
        Unit::Day => d.checked_add_signed(Duration::try_days(k)?),
        Unit::Week => d.checked_add_signed(Duration::try_days(k.checked_mul(7)?)?),
        Unit::Month => months(k),
        Unit::Quarter => months(k.checked_mul(3)?),
        Unit::Year => months(k.checked_mul(12)?),
    }
}

/// Midnight UTC of a date (the emulated org's time zone is UTC).
fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

fn no_column(field: &str, obj: &str) -> E {
    E::invalid_field(format!(
        "No such column '{field}' on entity '{obj}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."
    ))
}

fn bind_path(schema: &Schema, obj: &ObjDef, p: &mut Path) -> Result<(), E> {
    let parts: Vec<&str> = match p.parts.first() {
        // An optional leading object name (`Lead.Email` in `FROM Lead`).
        Some(first) if p.parts.len() > 1 && first.eq_ignore_ascii_case(obj.name) && obj.rel(first).is_none() => {
            p.parts[1..].iter().map(String::as_str).collect()
        }
        _ => p.parts.iter().map(String::as_str).collect(),
    };
    match parts.as_slice() {
        [f] => {
            let fd = obj.field(f).ok_or_else(|| no_column(f, obj.name))?;
            p.r = Some(FRef::Own { name: fd.name.clone(), ty: fd.ty.clone() });
        }
        // Salesforce follows up to five child-to-parent relationships in a path.
        [rels @ .., f] if rels.len() <= 5 => {
            let mut hops = Vec::with_capacity(rels.len());
            let mut here: Vec<&ObjDef> = vec![obj];
            for rel in rels {
                let rf = here.iter().find_map(|o| o.rel(rel)).ok_or_else(|| {
                    E::invalid_field(format!(
                        "Didn't understand relationship '{rel}' in field path. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names."
                    ))
                })?;
                let FType::Ref(targets) = rf.ty else { return Err(no_column(rel, here[0].name)) };
                hops.push(Hop { rel: rf.rel.clone().unwrap_or_default(), via: rf.name.clone() });
                here = targets.iter().filter_map(|t| schema.obj(t)).collect();
            }
            let fd = here
                .iter()
                .find_map(|o| o.field(f))
                .ok_or_else(|| no_column(f, here.first().map_or("Name", |o| o.name)))?;
            p.r = Some(FRef::Parent { hops, name: fd.name.clone(), ty: fd.ty.clone() });
        }
        _ => {
            return Err(malformed(format!(
                "field path '{}' follows more than 5 relationships (Salesforce's limit)",
                p.parts.join(".")
            )));
        }
    }
    Ok(())
}

fn type_word(ty: &FType) -> &'static str {
    match ty {
        FType::Bool => "boolean",
        FType::Int | FType::Num => "number",
        FType::Date => "date",
        FType::DateTime => "dateTime",
        FType::Id | FType::Ref(_) => "id",
        _ => "string",
    }
}

fn check_lit(p: &Path, lit: &mut Lit) -> Result<(), E> {
    let Some(r) = &p.r else { return Ok(()) };
    check_lit_ty(&p.parts.join("."), r.ty(), lit)
}

fn check_lit_ty(name: &str, ty: &FType, lit: &mut Lit) -> Result<(), E> {
    let ok = match (ty, &*lit) {
        (_, Lit::Null) | (FType::Any, _) => true,
        (t, Lit::Str(_)) if t.is_text() => true,
        (FType::Bool, Lit::Bool(_)) => true,
        (FType::Int | FType::Num, Lit::Num(_)) => true,
        (FType::Date, Lit::Date(_) | Lit::Range(..)) => true,
        (FType::DateTime, Lit::DateTime(_) | Lit::Range(..)) => true,
        _ => false,
    };
    if !ok {
        let quoted = ty.is_text();
        return Err(E::invalid_field(format!(
            "value of filter criterion for field '{}' must be of type {} and should {}be enclosed in quotes",
            name,
            type_word(ty),
            if quoted { "" } else { "not " }
        )));
    }
    if let (FType::Id | FType::Ref(_), Lit::Str(s)) = (ty, &*lit)
        && s.len() == 15
        && let Some(id) = sfid::to18(s)
    {
        *lit = Lit::Str(id);
    }
    Ok(())
}

fn bind_cond(schema: &Schema, obj: &ObjDef, c: &mut Cond) -> Result<(), E> {
    match c {
        Cond::And(a, b) | Cond::Or(a, b) => {
            bind_cond(schema, obj, a)?;
            bind_cond(schema, obj, b)
        }
        Cond::Not(a) => bind_cond(schema, obj, a),
        Cond::Cmp(p, _, l) => {
            bind_path(schema, obj, p)?;
            check_lit(p, l)
        }
        Cond::In(p, _, ls) => {
            bind_path(schema, obj, p)?;
            ls.iter_mut().try_for_each(|l| check_lit(p, l))
        }
        Cond::InQuery(p, _, sub) => {
            bind_path(schema, obj, p)?;
            if !matches!(p.r.as_ref().map(FRef::ty), Some(FType::Id | FType::Ref(_))) {
                return Err(malformed(format!(
                    "The left operand field in a semi join must be an id or a reference field: {}",
                    p.parts.join(".")
                )));
            }
            if sub.cond.as_ref().is_some_and(has_semi_join) {
                return Err(malformed("Nesting of semi join sub-selects is not supported"));
            }
            bind(schema, sub)?;
            match sub.select.as_slice() {
                [Item::Field(Path { r: Some(FRef::Own { ty: FType::Id | FType::Ref(_), .. }), .. })] => Ok(()),
                [Item::Field(f)] => Err(malformed(format!(
                    "The selected field '{}' in a semi join sub-select must be an id or a reference field",
                    f.parts.join(".")
                ))),
                _ => Err(malformed("Semi join sub-selects can only select one field")),
            }
        }
        Cond::Like(p, _) => {
            bind_path(schema, obj, p)?;
            match p.r.as_ref().map(FRef::ty) {
                Some(t) if t.is_text() || *t == FType::Any => Ok(()),
                _ => Err(E::invalid_field(format!(
                    "invalid operator on {} field: {}",
                    p.r.as_ref().map_or("", |r| type_word(r.ty())),
                    p.parts.join(".")
                ))),
            }
        }
    }
}

fn bind(schema: &Schema, q: &mut Query) -> Result<(), E> {
    let obj = schema.obj(&q.from).ok_or_else(|| {
        E::bad(
            "INVALID_TYPE",
            format!(
                "\n{0}\nsObject type '{0}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
                q.from
            ),
        )
    })?;
    q.from = obj.name.to_string();
    for item in &mut q.select {
        match item {
            Item::Field(p) => bind_path(schema, obj, p)?,
            Item::Count | Item::Agg(..) => {}
            Item::Sub(sub, rel) => {
                let cr = obj.child(&sub.from).ok_or_else(|| {
                    E::invalid_field(format!(
                        "Didn't understand relationship '{}' in FROM part of query call. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names.",
                        sub.from
                    ))
                })?;
                let mut inner = (**sub).clone();
                inner.from = cr.child.to_string();
                bind(schema, &mut inner)?;
                **sub = inner;
                *rel = Some(cr.clone());
            }
        }
    }
    if let Some(c) = &mut q.cond {
        if or_over_semi_join(c) {
            return Err(malformed("Semi join sub-selects are not allowed with the 'OR' operator"));
        }
        bind_cond(schema, obj, c)?;
    }
    for k in &mut q.order {
        bind_path(schema, obj, &mut k.path)?;
        if let Some(a) = &mut k.agg {
            a.arg = k.path.clone();
            check_agg(a)?;
        }
    }
    bind_aggregates(schema, obj, q)
}

/// Whether a field type can be grouped (describe `groupable`): not long text areas, datetimes or
/// doubles.
pub(crate) fn groupable(ty: &FType) -> bool {
    !matches!(ty, FType::DateTime | FType::Num) && !matches!(ty, FType::Str(n) if *n > 255)
}

/// Rejects an aggregate function over a field type it does not support, as Salesforce does.
fn check_agg(a: &Agg) -> Result<(), E> {
    let Some(r) = &a.arg.r else { return Ok(()) };
    let ty = r.ty();
    let long_text = matches!(ty, FType::Str(n) if *n > 255);
    let ok = match a.func {
        AggFn::Sum | AggFn::Avg => matches!(ty, FType::Int | FType::Num | FType::Any),
        AggFn::Count | AggFn::CountDistinct | AggFn::Min | AggFn::Max => *ty != FType::Bool && !long_text,
    };
    if ok {
        Ok(())
    } else {
        let name = match r {
            FRef::Own { name, .. } | FRef::Parent { name, .. } => name,
        };
        Err(malformed(format!("field {name} does not support aggregate operator {}", a.func.name())))
    }
}

fn bind_hcond(schema: &Schema, obj: &ObjDef, group: &[Path], c: &mut HCond) -> Result<(), E> {
    let bind_expr = |e: &mut HExpr| -> Result<(String, FType), E> {
        match e {
            HExpr::Agg(a) => {
                bind_path(schema, obj, &mut a.arg)?;
                check_agg(a)?;
                Ok((a.text(), a.ty()))
            }
            HExpr::Field(p) => {
                bind_path(schema, obj, p)?;
                if !group.iter().any(|g| g.key() == p.key()) {
                    return Err(malformed(format!("Field must be grouped or aggregated: {}", p.parts.join("."))));
                }
                Ok((p.parts.join("."), p.r.as_ref().map_or(FType::Any, |r| r.ty().clone())))
            }
        }
    };
    match c {
        HCond::And(a, b) | HCond::Or(a, b) => {
            bind_hcond(schema, obj, group, a)?;
            bind_hcond(schema, obj, group, b)
        }
        HCond::Not(a) => bind_hcond(schema, obj, group, a),
        HCond::Cmp(e, _, l) => {
            let (name, ty) = bind_expr(e)?;
            check_lit_ty(&name, &ty, l)
        }
        HCond::In(e, _, ls) => {
            let (name, ty) = bind_expr(e)?;
            ls.iter_mut().try_for_each(|l| check_lit_ty(&name, &ty, l))
        }
    }
}

/// Binds and checks the aggregate parts of a query: the `GROUP BY` fields, the aggregate
/// functions, `HAVING`, and that every plain field of the `SELECT` and `ORDER BY` lists is grouped.
fn bind_aggregates(schema: &Schema, obj: &ObjDef, q: &mut Query) -> Result<(), E> {
    for g in &mut q.group {
        bind_path(schema, obj, g)?;
        if let Some(r) = &g.r
            && !groupable(r.ty())
        {
            let name = match r {
                FRef::Own { name, .. } | FRef::Parent { name, .. } => name,
            };
            return Err(malformed(format!("field '{name}' can not be grouped in a query call")));
        }
    }
    for item in &mut q.select {
        if let Item::Agg(a, _) = item {
            bind_path(schema, obj, &mut a.arg)?;
            check_agg(a)?;
        }
    }
    let aggregate = q.is_aggregate();
    if let Some(h) = &mut q.having {
        if q.group.is_empty() {
            return Err(malformed("HAVING can only be used with GROUP BY"));
        }
        bind_hcond(schema, obj, &q.group, h)?;
    }
    if !aggregate {
        if q.order.iter().any(|k| k.agg.is_some()) && !q.is_count() {
            return Err(malformed("Aggregate functions in ORDER BY need an aggregate query (GROUP BY)"));
        }
        if let Some(a) = q.select.iter().find_map(|i| match i {
            Item::Field(p) => p.alias.clone(),
            _ => None,
        }) {
            return Err(malformed(format!("\nunexpected token: '{a}'")));
        }
        return Ok(());
    }
    let mut aliases: Vec<String> = Vec::new();
    for item in &q.select {
        match item {
            Item::Field(p) => {
                if !q.group.iter().any(|g| g.key() == p.key()) {
                    return Err(malformed(format!("Field must be grouped or aggregated: {}", p.parts.join("."))));
                }
                if let Some(a) = &p.alias {
                    aliases.push(a.to_lowercase());
                }
            }
            Item::Agg(_, Some(a)) => aliases.push(a.to_lowercase()),
            Item::Sub(..) => {
                return Err(malformed("Aggregate queries do not support parent-to-child relationship subqueries"));
            }
            _ => {}
        }
    }
    aliases.sort();
    if let Some(w) = aliases.windows(2).find(|w| w[0] == w[1]) {
        return Err(malformed(format!("duplicate alias: {}", w[0])));
    }
    for k in &q.order {
        if k.agg.is_none() && !q.group.iter().any(|g| g.key() == k.path.key()) {
            return Err(malformed(format!("Ordered field must be grouped or aggregated: {}", k.path.parts.join("."))));
        }
    }
    Ok(())
}

/// Whether a condition holds a semi- or anti-join.
fn has_semi_join(c: &Cond) -> bool {
    match c {
        Cond::And(a, b) | Cond::Or(a, b) => has_semi_join(a) || has_semi_join(b),
        Cond::Not(a) => has_semi_join(a),
        Cond::InQuery(..) => true,
        _ => false,
    }
}

/// Whether a semi- or anti-join sits under an `OR` (Salesforce refuses it).
fn or_over_semi_join(c: &Cond) -> bool {
    match c {
        Cond::Or(a, b) => has_semi_join(a) || has_semi_join(b),
        Cond::And(a, b) => or_over_semi_join(a) || or_over_semi_join(b),
        Cond::Not(a) => or_over_semi_join(a),
        _ => false,
    }
}

/// The condition with every semi- and anti-join replaced by the list of ids its subquery
/// selects (run once, here), so the rows are filtered, and indexes used, as for a literal list.
fn resolve_semi_joins(env: &Env<'_>, c: &Cond) -> Cond {
    match c {
        Cond::And(a, b) => Cond::And(Box::new(resolve_semi_joins(env, a)), Box::new(resolve_semi_joins(env, b))),
        Cond::Or(a, b) => Cond::Or(Box::new(resolve_semi_joins(env, a)), Box::new(resolve_semi_joins(env, b))),
        Cond::Not(a) => Cond::Not(Box::new(resolve_semi_joins(env, a))),
        Cond::InQuery(p, neg, sub) => {
            // The subquery sees live records only, whatever the outer query reads.
            let inner = Env { all_rows: false, ..*env };
            let Some(Item::Field(Path { r: Some(r), .. })) = sub.select.first() else {
                return Cond::In(p.clone(), *neg, Vec::new());
            };
            let ids: BTreeSet<String> = select(&inner, sub)
                .into_iter()
                .filter_map(|rec| value(env.org, env.schema, rec, r).as_str().map(str::to_string))
                .collect();
            Cond::In(p.clone(), *neg, ids.into_iter().map(Lit::Str).collect())
        }
        other => other.clone(),
    }
}

/// Parses and validates a query against the schema.
pub(crate) fn parse(schema: &Schema, src: &str, now: DateTime<Utc>) -> Result<Query, E> {
    let t = lex(src)?;
    let mut p = Parser { t, i: 0, now, src };
    let mut q = p.query(false)?;
    bind(schema, &mut q)?;
    Ok(q)
}

fn value(org: &Org, schema: &Schema, rec: &Rec, r: &FRef) -> Value {
    match r {
        FRef::Own { name, .. } => rec.fields.get(name).cloned().unwrap_or(Value::Null),
        FRef::Parent { hops, name, .. } => {
            let mut at = rec;
            for h in hops {
                let Some((_, p)) = at.fields.get(&h.via).and_then(Value::as_str).and_then(|id| org.find(schema, id))
                else {
                    return Value::Null;
                };
                at = p;
            }
            at.fields.get(name).cloned().unwrap_or(Value::Null)
        }
    }
}

fn unmark(s: &str) -> String {
    s.replace(LIT_PERCENT, "%").replace(LIT_UNDERSCORE, "_")
}

fn cmp_value(ty: &FType, v: &Value, lit: &Lit) -> Option<Ordering> {
    match (v, lit) {
        (Value::String(a), Lit::Str(b)) => Some(a.to_lowercase().cmp(&unmark(b).to_lowercase())),
        (Value::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Value::Number(a), Lit::Num(b)) => a.as_f64().and_then(|a| a.partial_cmp(b)),
        (Value::String(a), Lit::Num(b)) if *ty == FType::Any => a.parse::<f64>().ok().and_then(|a| a.partial_cmp(b)),
        (Value::String(a), Lit::Date(d)) => {
            let b = if *ty == FType::DateTime {
                d.and_hms_opt(0, 0, 0).map(|x| fmt_dt(x.and_utc())).unwrap_or_default()
            } else {
                d.format("%Y-%m-%d").to_string()
            };
            Some(a.as_str().cmp(b.as_str()))
        }
        (Value::String(a), Lit::DateTime(t)) => {
            if *ty == FType::Date {
                Some(a.as_str().cmp(t.format("%Y-%m-%d").to_string().as_str()))
            } else {
                Some(a.as_str().cmp(fmt_dt(*t).as_str()))
            }
        }
        _ => None,
    }
}

fn range_bound(ty: &FType, t: DateTime<Utc>) -> String {
    if *ty == FType::Date { t.format("%Y-%m-%d").to_string() } else { fmt_dt(t) }
}

fn compare(ty: &FType, v: &Value, op: Op, lit: &Lit) -> bool {
    if let Lit::Null = lit {
        return match op {
            Op::Eq => v.is_null(),
            Op::Ne => !v.is_null(),
            _ => false,
        };
    }
    if v.is_null() {
        return op == Op::Ne;
    }
    if let (Lit::Range(s, e), Value::String(a)) = (lit, v) {
        let (s, e) = (range_bound(ty, *s), range_bound(ty, *e));
        let a = a.as_str();
        return match op {
            Op::Eq => a >= s.as_str() && a < e.as_str(),
            Op::Ne => !(a >= s.as_str() && a < e.as_str()),
            Op::Lt => a < s.as_str(),
            Op::Le => a < e.as_str(),
            Op::Gt => a >= e.as_str(),
            Op::Ge => a >= s.as_str(),
        };
    }
    match cmp_value(ty, v, lit) {
        Some(o) => match op {
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
            Op::Lt => o == Ordering::Less,
            Op::Gt => o == Ordering::Greater,
            Op::Le => o != Ordering::Greater,
            Op::Ge => o != Ordering::Less,
        },
        None => op == Op::Ne,
    }
}

fn like(text: &str, pat: &str) -> bool {
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pat.to_lowercase().chars().collect();
    // dp[j] = pattern[..i] matches text[..j]
    let mut dp = vec![false; t.len() + 1];
    dp[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        match pc {
            '%' => {
                let mut any = false;
                for j in 0..=t.len() {
                    any |= dp[j];
                    next[j] = any;
                }
            }
            _ => {
                for j in 1..=t.len() {
                    let lit = match pc {
                        LIT_PERCENT => '%',
                        LIT_UNDERSCORE => '_',
                        c => c,
                    };
                    next[j] = dp[j - 1] && (pc == '_' || t[j - 1] == lit);
                }
            }
        }
        dp = next;
    }
    dp[t.len()]
}

fn eval(org: &Org, schema: &Schema, rec: &Rec, c: &Cond) -> bool {
    match c {
        Cond::And(a, b) => eval(org, schema, rec, a) && eval(org, schema, rec, b),
        Cond::Or(a, b) => eval(org, schema, rec, a) || eval(org, schema, rec, b),
        Cond::Not(a) => !eval(org, schema, rec, a),
        Cond::Cmp(p, op, l) => {
            let Some(r) = &p.r else { return false };
            compare(r.ty(), &value(org, schema, rec, r), *op, l)
        }
        Cond::In(p, neg, ls) => {
            let Some(r) = &p.r else { return false };
            let v = value(org, schema, rec, r);
            let hit = ls.iter().any(|l| compare(r.ty(), &v, Op::Eq, l));
            hit != *neg
        }
        // Resolved before any row is examined (see `resolve_semi_joins`).
        Cond::InQuery(..) => false,
        Cond::Like(p, pat) => {
            let Some(r) = &p.r else { return false };
            match value(org, schema, rec, r) {
                Value::String(s) => like(&s, pat),
                _ => false,
            }
        }
    }
}

fn cmp_json(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()).then_with(|| x.cmp(y)),
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// How two values of an `ORDER BY` key compare, nulls placed as the key says.
fn order_cmp(va: &Value, vb: &Value, k: &OrderKey) -> Ordering {
    match (va.is_null(), vb.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) => {
            if k.nulls_last {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (false, true) => {
            if k.nulls_last {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (false, false) => {
            let o = cmp_json(va, vb);
            if k.desc { o.reverse() } else { o }
        }
    }
}

/// Evaluation context.
pub(crate) struct Env<'a> {
    pub(crate) org: &'a Org,
    pub(crate) schema: &'a Schema,
    pub(crate) version: &'a str,
    /// Include soft-deleted records (queryAll).
    pub(crate) all_rows: bool,
    /// Deleted records older than this are purged from queryAll.
    pub(crate) purge_before: DateTime<Utc>,
}

fn select_rows<'a>(env: &Env<'a>, q: &Query, candidates: Vec<&'a Rec>) -> Vec<&'a Rec> {
    let mut rows: Vec<&Rec> = candidates
        .into_iter()
        .filter(|r| match r.deleted_at {
            None => true,
            Some(t) => env.all_rows && t >= env.purge_before,
        })
        .filter(|r| q.cond.as_ref().is_none_or(|c| eval(env.org, env.schema, r, c)))
        .collect();
    if !q.order.is_empty() {
        rows.sort_by(|a, b| {
            for k in &q.order {
                let Some(r) = &k.path.r else { continue };
                let (va, vb) = (value(env.org, env.schema, a, r), value(env.org, env.schema, b, r));
                let o = order_cmp(&va, &vb, k);
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
    }
    let off = q.offset.unwrap_or(0);
    rows.into_iter().skip(off).take(q.limit.unwrap_or(usize::MAX)).collect()
}

/// `{"type","url"}` for a record.
pub(crate) fn attributes(version: &str, ty: &str, id: &str) -> Value {
    json!({"type": ty, "url": format!("/services/data/{version}/sobjects/{ty}/{id}")})
}

/// Puts a parent field into a rendered record: one nested object per hop (with its `attributes`),
/// shared with the other selected fields of the same parents; a missing parent is `null`.
fn render_parent(env: &Env<'_>, m: &mut Map<String, Value>, rec: &Rec, hops: &[Hop], name: &str) {
    let Some((h, rest)) = hops.split_first() else {
        m.insert(name.to_string(), rec.fields.get(name).cloned().unwrap_or(Value::Null));
        return;
    };
    match rec.fields.get(&h.via).and_then(Value::as_str).and_then(|pid| env.org.find(env.schema, pid)) {
        None => {
            m.entry(h.rel.clone()).or_insert(Value::Null);
        }
        Some((pty, prec)) => {
            let pid = prec.fields.get("Id").and_then(Value::as_str).unwrap_or("");
            let entry =
                m.entry(h.rel.clone()).or_insert_with(|| json!({"attributes": attributes(env.version, pty, pid)}));
            if let Value::Object(o) = entry {
                render_parent(env, o, prec, rest, name);
            }
        }
    }
}

fn render(env: &Env<'_>, q: &Query, rec: &Rec) -> Value {
    let id = rec.fields.get("Id").and_then(Value::as_str).unwrap_or("");
    let mut m = Map::new();
    m.insert("attributes".into(), attributes(env.version, &q.from, id));
    for item in &q.select {
        match item {
            Item::Count | Item::Agg(..) => {}
            Item::Field(p) => match &p.r {
                Some(FRef::Own { name, .. }) => {
                    m.insert(name.clone(), rec.fields.get(name).cloned().unwrap_or(Value::Null));
                }
                Some(FRef::Parent { hops, name, .. }) => render_parent(env, &mut m, rec, hops, name),
                None => {}
            },
            Item::Sub(sub, Some(cr)) => {
                let kids = children(env.org, cr, id);
                let inner = Env { all_rows: false, ..*env };
                let rows = select_rows(&inner, sub, kids);
                let val = if rows.is_empty() {
                    Value::Null
                } else {
                    let records: Vec<Value> = rows.iter().map(|r| render(&inner, sub, r)).collect();
                    json!({"totalSize": records.len(), "done": true, "records": records})
                };
                m.insert(cr.name.to_string(), val);
            }
            Item::Sub(_, None) => {}
        }
    }
    Value::Object(m)
}

/// The child records of a parent (`(SELECT … FROM Tasks)`), in id order, through the index on
/// the child's reference field when there is one.
fn children<'a>(org: &'a Org, cr: &ChildRel, parent_id: &str) -> Vec<&'a Rec> {
    let exact = |r: &&Rec| r.fields.get(cr.field).and_then(Value::as_str) == Some(parent_id);
    match (org.posting(cr.child, cr.field, &parent_id.to_lowercase()), org.by_id(cr.child)) {
        (Some(post), Some(m)) => {
            let ids: BTreeSet<Id18> = post.into_iter().flat_map(Post::ids).copied().collect();
            ids.iter().filter_map(|id| m.get(id_str(id))).filter(exact).collect()
        }
        (Some(_), None) => Vec::new(),
        (None, _) => org.all(cr.child).filter(exact).collect(),
    }
}

/// The index keys of a list of literals; `None` when one cannot be looked up (null, numbers,
/// dates, ranges), so the condition cannot use an index.
fn lit_keys(lits: &[Lit]) -> Option<Vec<String>> {
    lits.iter()
        .map(|l| match l {
            Lit::Str(s) => Some(unmark(s).to_lowercase()),
            Lit::Bool(b) => index_key(&Value::Bool(*b)),
            _ => None,
        })
        .collect()
}

/// A condition's equality leaf on an own field: (field, literals).
fn eq_leaf(c: &Cond) -> Option<(&str, &[Lit])> {
    let (p, lits) = match c {
        Cond::Cmp(p, Op::Eq, l) => (p, std::slice::from_ref(l)),
        Cond::In(p, false, ls) => (p, ls.as_slice()),
        _ => return None,
    };
    match &p.r {
        Some(FRef::Own { name, .. }) => Some((name.as_str(), lits)),
        _ => None,
    }
}

/// An upper bound of the rows a condition can match through indexes; `None` when it needs a
/// scan.
fn estimate(org: &Org, ty: &str, c: &Cond) -> Option<usize> {
    match c {
        Cond::And(a, b) => match (estimate(org, ty, a), estimate(org, ty, b)) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        },
        Cond::Or(a, b) => Some(estimate(org, ty, a)?.saturating_add(estimate(org, ty, b)?)),
        _ => {
            let (field, lits) = eq_leaf(c)?;
            let keys = lit_keys(lits)?;
            if field == "Id" {
                return Some(keys.len());
            }
            let mut n = 0usize;
            for k in &keys {
                n = n.saturating_add(org.posting(ty, field, k)?.map_or(0, Post::len));
            }
            Some(n)
        }
    }
}

/// The candidate ids of a condition whose [`estimate`] is `Some`: a superset of its matches.
fn candidates(org: &Org, ty: &str, c: &Cond, out: &mut BTreeSet<Id18>) {
    match c {
        Cond::And(a, b) => match (estimate(org, ty, a), estimate(org, ty, b)) {
            (Some(x), Some(y)) if y < x => candidates(org, ty, b, out),
            (Some(_), _) => candidates(org, ty, a, out),
            _ => candidates(org, ty, b, out),
        },
        Cond::Or(a, b) => {
            candidates(org, ty, a, out);
            candidates(org, ty, b, out);
        }
        _ => {
            let Some((field, lits)) = eq_leaf(c) else { return };
            let Some(keys) = lit_keys(lits) else { return };
            for k in &keys {
                if field == "Id" {
                    out.extend(org.ids_matching(ty, k));
                } else if let Some(Some(post)) = org.posting(ty, field, k) {
                    out.extend(post.ids().copied());
                }
            }
        }
    }
}

/// The records a query has to examine, in id order: the index candidates of its `WHERE` when
/// an index applies, else every record of the type. Counts the query in the org's counters.
fn scan_set<'a>(env: &Env<'a>, q: &Query) -> Vec<&'a Rec> {
    let org = env.org;
    let counters = &org.counters;
    counters.queries.fetch_add(1, AtomicOrdering::Relaxed);
    let indexed = !org.scan_only.load(AtomicOrdering::Relaxed);
    let plan = q.cond.as_ref().filter(|_| indexed).filter(|c| estimate(org, &q.from, c).is_some());
    let rows: Vec<&Rec> = match (plan, org.by_id(&q.from)) {
        (Some(c), Some(m)) => {
            counters.indexed.fetch_add(1, AtomicOrdering::Relaxed);
            let mut ids = BTreeSet::new();
            candidates(org, &q.from, c, &mut ids);
            ids.iter().filter_map(|id| m.get(id_str(id))).collect()
        }
        (Some(_), None) => {
            counters.indexed.fetch_add(1, AtomicOrdering::Relaxed);
            Vec::new()
        }
        (None, _) => org.all(&q.from).collect(),
    };
    counters.rows_examined.fetch_add(rows.len() as u64, AtomicOrdering::Relaxed);
    rows
}

/// The rows of a bound query, filtered, ordered, offset and limited.
pub(crate) fn select<'a>(env: &Env<'a>, q: &Query) -> Vec<&'a Rec> {
    if q.cond.as_ref().is_some_and(has_semi_join) {
        let resolved = Query { cond: q.cond.as_ref().map(|c| resolve_semi_joins(env, c)), ..q.clone() };
        return select_rows(env, &resolved, scan_set(env, &resolved));
    }
    select_rows(env, q, scan_set(env, q))
}

/// Renders rows as the REST API does.
pub(crate) fn render_rows(env: &Env<'_>, q: &Query, rows: &[&Rec]) -> Vec<Value> {
    rows.iter().map(|r| render(env, q, r)).collect()
}

/// The queried type.
pub(crate) fn from(q: &Query) -> &str {
    &q.from
}

/// Why a query cannot run as a Bulk API 2.0 query job (`None`: it can).
pub(crate) fn bulk_unsupported(q: &Query) -> Option<&'static str> {
    if q.is_count() || q.is_aggregate() {
        Some("Aggregate queries are not supported by Bulk API 2.0 query")
    } else if !q.group.is_empty() {
        Some("GROUP BY is not supported by Bulk API 2.0 query")
    } else if q.select.iter().any(|i| matches!(i, Item::Sub(..))) {
        Some("Parent-to-child relationship queries are not supported by Bulk API 2.0 query")
    } else if q.offset.is_some() {
        Some("OFFSET is not supported by Bulk API 2.0 query")
    } else {
        None
    }
}

/// The CSV column names of a query's fields (`Id`, `Owner.Name`).
pub(crate) fn columns(q: &Query) -> Vec<String> {
    q.select
        .iter()
        .filter_map(|i| match i {
            Item::Field(Path { r: Some(FRef::Own { name, .. }), .. }) => Some(name.clone()),
            Item::Field(Path { r: Some(FRef::Parent { hops, name, .. }), .. }) => {
                Some(hops.iter().map(|h| h.rel.as_str()).chain([name.as_str()]).collect::<Vec<_>>().join("."))
            }
            _ => None,
        })
        .collect()
}

/// The values of a row in [`columns`] order.
pub(crate) fn row_values(env: &Env<'_>, q: &Query, rec: &Rec) -> Vec<Value> {
    q.select
        .iter()
        .filter_map(|i| match i {
            Item::Field(Path { r: Some(r), .. }) => Some(value(env.org, env.schema, rec, r)),
            _ => None,
        })
        .collect()
}

/// Runs a bound query; returns the rendered records (empty for COUNT()) and the total size
/// (for an aggregate query, or `COUNT()` with `GROUP BY`, the number of groups).
pub(crate) fn run(env: &Env<'_>, q: &Query) -> (Vec<Value>, usize) {
    if q.is_aggregate() {
        let records = aggregate(env, q);
        let n = records.len();
        return (records, n);
    }
    if q.is_count() && !q.group.is_empty() {
        return (Vec::new(), aggregate(env, q).len());
    }
    let rows = select(env, q);
    if q.is_count() {
        return (Vec::new(), rows.len());
    }
    let records = render_rows(env, q, &rows);
    let n = records.len();
    (records, n)
}

/// The most `AggregateResult` rows one query may return: aggregate queries have no
/// `nextRecordsUrl`, so more groups are an error.
pub(crate) const MAX_AGGREGATE_ROWS: usize = 2000;

/// The answer to an aggregate query with more than [`MAX_AGGREGATE_ROWS`] groups.
pub(crate) fn too_many_groups() -> E {
    malformed("Aggregate query does not support queryMore(), use LIMIT to restrict the results to a single batch")
}

/// True for queries that have a `GROUP BY` clause or aggregate functions, including `COUNT()`
/// with `GROUP BY`: their answer is computed per group, never paged.
pub(crate) fn is_grouped(q: &Query) -> bool {
    q.is_aggregate() || !q.group.is_empty()
}

/// One group of an aggregate query: its grouped values (in `GROUP BY` order) and its rows.
struct Group<'a> {
    keys: Vec<Value>,
    rows: Vec<&'a Rec>,
}

/// The grouping key of a value: text groups case-insensitively, as Salesforce compares text.
fn group_key(v: &Value) -> String {
    match v {
        Value::String(s) => format!("s:{}", s.to_lowercase()),
        other => other.to_string(),
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The value of an aggregate function over a group's rows (nulls ignored, as in SQL): counts
/// are integers, `AVG` a float, `SUM` an integer over integer fields, `MIN`/`MAX` a value of the
/// field's type; `null` when no row has a value.
fn agg_value(env: &Env<'_>, a: &Agg, rows: &[&Rec]) -> Value {
    let Some(r) = &a.arg.r else { return Value::Null };
    let vals: Vec<Value> = rows.iter().map(|rec| value(env.org, env.schema, rec, r)).filter(|v| !v.is_null()).collect();
    match a.func {
        AggFn::Count => json!(vals.len()),
        AggFn::CountDistinct => json!(vals.iter().map(group_key).collect::<BTreeSet<_>>().len()),
        AggFn::Min => vals.iter().min_by(|x, y| cmp_json(x, y)).cloned().unwrap_or(Value::Null),
        AggFn::Max => vals.iter().max_by(|x, y| cmp_json(x, y)).cloned().unwrap_or(Value::Null),
        AggFn::Sum | AggFn::Avg => {
            let nums: Vec<f64> = vals.iter().filter_map(as_number).collect();
            if nums.is_empty() {
                return Value::Null;
            }
            let sum: f64 = nums.iter().sum();
            match (a.func, a.ty()) {
                (AggFn::Sum, FType::Int) => json!(sum.round() as i64),
                (AggFn::Sum, _) => json!(sum),
                _ => json!(sum / nums.len() as f64),
            }
        }
    }
}

/// The value of a grouped field in a group (the field must be in the `GROUP BY` list).
fn group_value(q: &Query, g: &Group<'_>, p: &Path) -> Value {
    let key = p.key();
    q.group.iter().position(|x| x.key() == key).and_then(|i| g.keys.get(i)).cloned().unwrap_or(Value::Null)
}

fn eval_having(env: &Env<'_>, q: &Query, g: &Group<'_>, c: &HCond) -> bool {
    let operand = |e: &HExpr| -> (FType, Value) {
        match e {
            HExpr::Agg(a) => (a.ty(), agg_value(env, a, &g.rows)),
            HExpr::Field(p) => (p.r.as_ref().map_or(FType::Any, |r| r.ty().clone()), group_value(q, g, p)),
        }
    };
    match c {
        HCond::And(a, b) => eval_having(env, q, g, a) && eval_having(env, q, g, b),
        HCond::Or(a, b) => eval_having(env, q, g, a) || eval_having(env, q, g, b),
        HCond::Not(a) => !eval_having(env, q, g, a),
        HCond::Cmp(e, op, l) => {
            let (ty, v) = operand(e);
            compare(&ty, &v, *op, l)
        }
        HCond::In(e, neg, ls) => {
            let (ty, v) = operand(e);
            ls.iter().any(|l| compare(&ty, &v, Op::Eq, l)) != *neg
        }
    }
}

/// Runs an aggregate query: filters the rows, groups them (one group over all rows without
/// `GROUP BY`), applies `HAVING`, `ORDER BY` (grouped values ascending by default), `OFFSET` and
/// `LIMIT`, and renders one `AggregateResult` record per group. Unaliased aggregates are named
/// `expr0`, `expr1`, … in `SELECT` order; grouped fields by their alias or last field name.
fn aggregate(env: &Env<'_>, q: &Query) -> Vec<Value> {
    let base = Query { order: Vec::new(), limit: None, offset: None, ..q.clone() };
    let rows = select(env, &base);
    let mut groups: Vec<Group<'_>> = Vec::new();
    if q.group.is_empty() {
        groups.push(Group { keys: Vec::new(), rows });
    } else {
        let mut index: std::collections::HashMap<Vec<String>, usize> = std::collections::HashMap::new();
        for rec in rows {
            let keys: Vec<Value> = q
                .group
                .iter()
                .map(|g| g.r.as_ref().map_or(Value::Null, |r| value(env.org, env.schema, rec, r)))
                .collect();
            let k: Vec<String> = keys.iter().map(group_key).collect();
            match index.get(&k) {
                Some(&i) => groups[i].rows.push(rec),
                None => {
                    index.insert(k, groups.len());
                    groups.push(Group { keys, rows: vec![rec] });
                }
            }
        }
        let asc = OrderKey {
            path: Path { parts: Vec::new(), r: None, alias: None },
            agg: None,
            desc: false,
            nulls_last: false,
        };
        groups.sort_by(|a, b| {
            a.keys
                .iter()
                .zip(&b.keys)
                .map(|(x, y)| order_cmp(x, y, &asc))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
    }
    if let Some(h) = &q.having {
        groups.retain(|g| eval_having(env, q, g, h));
    }
    if !q.order.is_empty() {
        let key_value = |g: &Group<'_>, k: &OrderKey| match &k.agg {
            Some(a) => agg_value(env, a, &g.rows),
            None => group_value(q, g, &k.path),
        };
        groups.sort_by(|a, b| {
            q.order
                .iter()
                .map(|k| order_cmp(&key_value(a, k), &key_value(b, k), k))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
    }
    groups
        .iter()
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(usize::MAX))
        .map(|g| {
            let mut m = Map::new();
            m.insert("attributes".into(), json!({"type": "AggregateResult"}));
            let mut expr = 0;
            for item in &q.select {
                match item {
                    Item::Field(p) => {
                        m.insert(p.result_name(), group_value(q, g, p));
                    }
                    Item::Agg(a, alias) => {
                        let name = alias.clone().unwrap_or_else(|| {
                            expr += 1;
                            format!("expr{}", expr - 1)
                        });
                        m.insert(name, agg_value(env, a, &g.rows));
                    }
                    Item::Count | Item::Sub(..) => {}
                }
            }
            Value::Object(m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_wildcards_and_escapes() {
        assert!(like("Hello World", "hello%"));
        assert!(like("Hello", "h_llo"));
        assert!(!like("Hello", "h_lo"));
        assert!(like("50% off", &format!("50{LIT_PERCENT} off")));
        assert!(!like("50x off", &format!("50{LIT_PERCENT} off")));
        assert!(like("", "%"));
    }

    #[test]
    fn lexes_escapes_dates_and_symbols() {
        let t =
            lex(r"x = 'a\'b\\c\nd\u00e9' AND d > 2026-01-01T00:00:00+05:30 AND e <> 2026-02-03").unwrap_or_default();
        assert_eq!(t[2], Tok::Str("a'b\\c\nd\u{e9}".into()));
        assert!(matches!(t[6], Tok::DateTime(_)));
        assert_eq!(t[9], Tok::Sym("!="));
        assert!(lex(r"x = '\q'").is_err());
        assert!(lex("x = 'open").is_err());
    }
}
