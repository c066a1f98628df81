//! SOQL relative date literals over real HTTP. The emulator clock stands at Monday
//! 2026-06-15 15:00 UTC; the org is on UTC with weeks starting on Sunday.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod salesforce_common;

use std::collections::BTreeSet;

use chrono::{Duration, TimeZone, Utc};
use salesforce_common::{H, clock, code, obj};
use salesync_emulator::salesforce::SalesforceConfig;
use serde_json::json;

const DATES: &[&str] = &[
    "2025-06-15",
    "2025-12-31",
    "2026-01-01",
    "2026-03-16",
    "2026-03-17",
    "2026-03-31",
    "2026-04-01",
    "2026-04-30",
    "2026-05-01",
    "2026-05-30",
    "2026-05-31",
    "2026-06-01",
    "2026-06-06",
    "2026-06-07",
    "2026-06-12",
    "2026-06-13",
    "2026-06-14",
    "2026-06-15",
    "2026-06-16",
    "2026-06-20",
    "2026-06-21",
    "2026-06-27",
    "2026-06-28",
    "2026-06-30",
    "2026-07-01",
    "2026-07-04",
    "2026-07-05",
    "2026-07-31",
    "2026-08-01",
    "2026-09-13",
    "2026-09-14",
    "2026-09-30",
    "2026-10-01",
    "2026-12-31",
    "2027-01-01",
    "2027-06-15",
];

/// Each literal with the [start, end) dates it covers, worked out by hand from the calendar.
const RANGES: &[(&str, &str, &str)] = &[
    ("TODAY", "2026-06-15", "2026-06-16"),
    ("THIS_WEEK", "2026-06-14", "2026-06-21"),
    ("LAST_WEEK", "2026-06-07", "2026-06-14"),
    ("NEXT_WEEK", "2026-06-21", "2026-06-28"),
    ("THIS_MONTH", "2026-06-01", "2026-07-01"),
    ("LAST_MONTH", "2026-05-01", "2026-06-01"),
    ("NEXT_MONTH", "2026-07-01", "2026-08-01"),
    ("LAST_90_DAYS", "2026-03-17", "2026-06-16"),
    ("NEXT_90_DAYS", "2026-06-16", "2026-09-14"),
    ("THIS_QUARTER", "2026-04-01", "2026-07-01"),
    ("LAST_QUARTER", "2026-01-01", "2026-04-01"),
    ("NEXT_QUARTER", "2026-07-01", "2026-10-01"),
    ("THIS_YEAR", "2026-01-01", "2027-01-01"),
    ("LAST_YEAR", "2025-01-01", "2026-01-01"),
    ("NEXT_YEAR", "2027-01-01", "2028-01-01"),
    ("THIS_FISCAL_YEAR", "2026-01-01", "2027-01-01"),
    ("LAST_FISCAL_QUARTER", "2026-01-01", "2026-04-01"),
    ("LAST_N_DAYS:2", "2026-06-13", "2026-06-16"),
    ("NEXT_N_DAYS:1", "2026-06-16", "2026-06-17"),
    ("LAST_N_WEEKS:2", "2026-05-31", "2026-06-14"),
    ("NEXT_N_WEEKS:2", "2026-06-21", "2026-07-05"),
    ("LAST_N_MONTHS:2", "2026-04-01", "2026-06-01"),
    ("NEXT_N_MONTHS:1", "2026-07-01", "2026-08-01"),
    ("LAST_N_QUARTERS:1", "2026-01-01", "2026-04-01"),
    ("NEXT_N_QUARTERS:2", "2026-07-01", "2027-01-01"),
    ("LAST_N_YEARS:1", "2025-01-01", "2026-01-01"),
    ("NEXT_N_YEARS:1", "2027-01-01", "2028-01-01"),
    ("N_DAYS_AGO:3", "2026-06-12", "2026-06-13"),
    ("N_WEEKS_AGO:1", "2026-06-07", "2026-06-14"),
    ("N_MONTHS_AGO:2", "2026-04-01", "2026-05-01"),
    ("N_YEARS_AGO:1", "2025-01-01", "2026-01-01"),
];

async fn subjects(h: &H, cond: &str) -> BTreeSet<String> {
    let q = format!("SELECT Subject FROM Task WHERE {cond}");
    let (s, b) = h.query_page(&q, false, None).await;
    assert_eq!(s, 200, "{q}: {b}");
    b["records"].as_array().unwrap().iter().map(|r| r["Subject"].as_str().unwrap().to_string()).collect()
}

fn between(start: &str, end: &str) -> BTreeSet<String> {
    DATES.iter().filter(|d| **d >= start && **d < end).map(|d| d.to_string()).collect()
}

#[tokio::test]
async fn relative_date_literals_cover_the_calendar_periods() {
    let h = H::default().await;
    for d in DATES {
        h.emu.insert("Task", obj(json!({"Subject": d, "ActivityDate": d}))).unwrap();
    }
    for (lit, start, end) in RANGES {
        assert_eq!(subjects(&h, &format!("ActivityDate = {lit}")).await, between(start, end), "{lit}");
        // Lower-case literals work too; comparison operators use the range's ends.
        let lower = lit.to_lowercase();
        assert_eq!(subjects(&h, &format!("ActivityDate < {lower}")).await, between("0000", start), "< {lit}");
        assert_eq!(subjects(&h, &format!("ActivityDate > {lit}")).await, between(end, "9999"), "> {lit}");
        assert_eq!(subjects(&h, &format!("ActivityDate <= {lit}")).await, between("0000", end), "<= {lit}");
        assert_eq!(subjects(&h, &format!("ActivityDate >= {lit}")).await, between(start, "9999"), ">= {lit}");
    }
    // IN and != take literals as well.
    let mut both = between("2026-05-01", "2026-06-01");
    both.extend(between("2026-07-01", "2026-08-01"));
    assert_eq!(subjects(&h, "ActivityDate IN (LAST_MONTH, NEXT_MONTH)").await, both);
    let all: BTreeSet<String> = DATES.iter().map(|d| d.to_string()).collect();
    let not_this_year: BTreeSet<String> = all.difference(&between("2026-01-01", "2027-01-01")).cloned().collect();
    assert_eq!(subjects(&h, "ActivityDate != THIS_YEAR").await, not_this_year);
}

#[tokio::test]
async fn datetime_fields_use_utc_midnight_bounds() {
    let c = clock();
    let h = H::start(SalesforceConfig { clock: c.clone(), daily_api_limit: 10_000_000, ..Default::default() }).await;
    let now = c.now();
    for (subject, at) in [
        ("sat-last-week", Utc.with_ymd_and_hms(2026, 6, 13, 23, 59, 59).unwrap()),
        ("sun-this-week", Utc.with_ymd_and_hms(2026, 6, 14, 0, 0, 0).unwrap()),
        ("last-quarter-end", Utc.with_ymd_and_hms(2026, 3, 31, 23, 0, 0).unwrap()),
    ] {
        c.set(at);
        h.emu.insert("Task", obj(json!({"Subject": subject}))).unwrap();
    }
    c.set(now + Duration::minutes(1));
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(subjects(&h, "CreatedDate = LAST_WEEK").await, set(&["sat-last-week"]));
    assert_eq!(subjects(&h, "CreatedDate = THIS_WEEK").await, set(&["sun-this-week"]));
    assert_eq!(subjects(&h, "CreatedDate = LAST_QUARTER").await, set(&["last-quarter-end"]));
    assert_eq!(subjects(&h, "CreatedDate = THIS_QUARTER").await, set(&["sat-last-week", "sun-this-week"]));
}

#[tokio::test]
async fn unknown_or_incomplete_literals_are_malformed_queries() {
    let h = H::default().await;
    for cond in [
        "ActivityDate = THIS_DECADE",
        "ActivityDate = LAST_N_WEEKS",
        "ActivityDate = LAST_N_MONTHS:x",
        "ActivityDate = N_DAYS_AGO",
        "ActivityDate = THIS_DAYS",
        "ActivityDate = LAST_N_WEEK:2",
    ] {
        let q = format!("SELECT Id FROM Task WHERE {cond}");
        let (s, b) = h.query_page(&q, false, None).await;
        assert_eq!(s, 400, "{q}: {b}");
        assert_eq!(code(&b), "MALFORMED_QUERY", "{q}: {b}");
        assert!(b[0]["message"].as_str().unwrap().contains("unexpected"), "{q}: {b}");
    }
    // A date literal against a text field is a type error, as for any date value.
    let (s, b) = h.query_page("SELECT Id FROM Task WHERE Subject = THIS_WEEK", false, None).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(code(&b), "INVALID_FIELD", "{b}");
}
