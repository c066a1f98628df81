#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `salesync` binary end to end: `salesync emulate` runs as a child process on loopback, and
//! every other command runs against it with its configuration in `SALESYNC_*` variables.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command as StdCommand, Stdio};

use assert_cmd::Command;
use serde_json::Value;

/// The seed `salesync emulate` uses by default.
const SEED: u64 = 1;
const PEOPLE: usize = 300;

/// The `salesync` binary, run in `dir` (so no stray `salesync.toml` is read) with no inherited
/// `SALESYNC_*` variables.
fn salesync(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("salesync").unwrap();
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("SALESYNC_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A running `salesync emulate` child; killed when dropped.
struct Emulator {
    child: Child,
    line: Value,
}

impl Emulator {
    fn start() -> Emulator {
        let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("salesync"))
            .args(["emulate", "--people", &PEOPLE.to_string(), "--seed", &SEED.to_string(), "--no-limits"])
            .env_remove("SALESYNC_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn salesync emulate");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let line: Value = match serde_json::from_str(first.trim()) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                panic!("emulate printed {first:?}: {e}");
            }
        };
        Emulator { child, line }
    }

    fn get(&self, key: &str) -> String {
        self.line[key].as_str().unwrap_or_else(|| panic!("{key} missing in {}", self.line)).to_string()
    }

    /// The variables that point the command at this emulator, with a SQLite store in `dir`.
    fn env(&self, dir: &Path) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            ("SALESYNC_MARKETO_URL", "marketo_url"),
            ("SALESYNC_MARKETO_CLIENT_ID", "marketo_client_id"),
            ("SALESYNC_MARKETO_CLIENT_SECRET", "marketo_client_secret"),
            ("SALESYNC_SALESFORCE_URL", "salesforce_url"),
            ("SALESYNC_SALESFORCE_CLIENT_ID", "salesforce_client_id"),
            ("SALESYNC_SALESFORCE_CLIENT_SECRET", "salesforce_client_secret"),
        ]
        .into_iter()
        .map(|(var, key)| (var.to_string(), self.get(key)))
        .collect();
        v.push(("SALESYNC_STORE".into(), format!("sqlite://{}", dir.join("m.db").display())));
        v.push(("SALESYNC_INITIAL_MODE".into(), "rest".into()));
        v
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `salesync <args>` with `env`; returns (exit code, stdout, stderr).
fn run(dir: &Path, env: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let out = salesync(dir).envs(env.iter().map(|(k, v)| (k, v))).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(dir: &Path, env: &[(String, String)], args: &[&str]) -> String {
    let (code, out, err) = run(dir, env, args);
    assert_eq!(code, 0, "salesync {args:?} exited {code}\nstdout:\n{out}\nstderr:\n{err}");
    out
}

fn jsonl(text: &str) -> Vec<serde_json::Map<String, Value>> {
    text.lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => m,
            other => panic!("not a JSON object: {l:?} ({other:?})"),
        })
        .collect()
}

/// The exported columns, in table order: the 13 synced fields, then type and owner.
const COLUMNS: [&str; 15] = [
    "marketo_id",
    "first_name",
    "last_name",
    "salesforce_contact_id",
    "salesforce_lead_id",
    "salesforce_account_id",
    "salesforce_opportunity_id",
    "company",
    "title",
    "email",
    "phone",
    "linkedin_url",
    "source",
    "salesforce_type",
    "owner_id",
];

#[test]
fn sync_read_record_deliver_and_doctor_against_the_emulators() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let env = emu.env(dir.path());

    // Initial sync.
    let out = ok(dir.path(), &env, &["sync", "--once"]);
    let summary = out.lines().find(|l| l.starts_with("sync:")).unwrap_or_else(|| panic!("no summary in {out}"));
    assert!(summary.contains("inserted"), "{summary}");
    let inserted: usize = summary["sync: ".len()..].split(' ').next().unwrap().parse().unwrap();

    // The mirror as JSON lines: 15 keys each, qualified people only.
    let people = jsonl(&ok(dir.path(), &env, &["people", "--format", "jsonl"]));
    let qualified = salesync::emulator::seed::generate(PEOPLE, SEED).people.iter().filter(|p| p.has_owner()).count();
    assert!(qualified > 0 && qualified < PEOPLE, "the seeded world mixes qualified and other people");
    assert_eq!(people.len(), qualified);
    assert_eq!(inserted, qualified, "{summary}");
    let mut want: Vec<&str> = COLUMNS.to_vec();
    want.sort_unstable();
    for p in &people {
        let mut keys: Vec<&str> = p.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, want);
        assert!(p["marketo_id"].is_i64(), "{p:?}");
        assert!(matches!(p["salesforce_type"].as_str(), Some("Lead" | "Contact")), "{p:?}");
        assert!(p["owner_id"].as_str().is_some_and(|o| !o.is_empty()), "{p:?}");
    }

    // CSV: a header and one row per person.
    let csv = ok(dir.path(), &env, &["people", "--format", "csv"]);
    assert_eq!(csv.lines().next().unwrap(), COLUMNS.join(","));
    assert_eq!(csv.lines().count(), qualified + 1);

    // Duplicated emails are all returned.
    let mut by_email: HashMap<String, usize> = HashMap::new();
    for p in &people {
        if let Some(e) = p["email"].as_str() {
            *by_email.entry(e.to_lowercase()).or_default() += 1;
        }
    }
    let (email, n) = by_email.iter().find(|(_, n)| **n > 1).expect("the seeded world has duplicated emails");
    let dups = jsonl(&ok(dir.path(), &env, &["people", "--email", email, "--format", "jsonl"]));
    assert!(dups.len() >= 2 && dups.len() == *n, "{email}: {} of {n}", dups.len());

    // By owner: exactly that owner's people.
    let owner = people[0]["owner_id"].as_str().unwrap();
    let owned = jsonl(&ok(dir.path(), &env, &["people", "--owner", owner, "--format", "jsonl"]));
    assert_eq!(owned.len(), people.iter().filter(|p| p["owner_id"] == owner).count());

    // A sales email, recorded then delivered by the next pass.
    let person = people[0]["marketo_id"].as_i64().unwrap().to_string();
    let id = ok(
        dir.path(),
        &env,
        &[
            "activity",
            "record",
            "--kind",
            "send-sales-email",
            "--person",
            &person,
            "--subject",
            "Hi",
            "--sender",
            "rep@example.com",
        ],
    );
    let id = id.trim();
    assert!(!id.is_empty() && !id.contains(char::is_whitespace), "{id:?}");
    let out = ok(dir.path(), &env, &["sync", "--once"]);
    assert!(out.contains("delivery: 1 to Marketo"), "{out}");
    let status = ok(dir.path(), &env, &["status"]);
    assert!(status.contains(&format!("people in mirror: {qualified}")), "{status}");
    let outbox = status.lines().find(|l| l.starts_with("outbox:")).unwrap();
    assert!(outbox.starts_with("outbox: 0 pending, 0 in flight,"), "{outbox}");
    let delivered: u64 = outbox.split(", ").find_map(|s| s.strip_suffix(" delivered")).unwrap().parse().unwrap();
    assert!(delivered >= 1, "{outbox}");

    // Doctor: every check passes.
    let out = ok(dir.path(), &env, &["doctor"]);
    assert!(out.lines().count() >= 4, "{out}");
    for line in out.lines() {
        assert!(line.starts_with("ok "), "{line}");
    }
    assert!(out.contains("Marketo credentials") && out.contains("Salesforce credentials"), "{out}");
}

#[test]
fn doctor_reports_wrong_marketo_credentials_without_printing_the_secret() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = "wrong-secret-4b1d9c";
    let mut env = emu.env(dir.path());
    for (k, v) in env.iter_mut() {
        if k == "SALESYNC_MARKETO_CLIENT_SECRET" {
            *v = secret.into();
        }
    }
    let (code, out, err) = run(dir.path(), &env, &["doctor"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.lines().any(|l| l.starts_with("FAIL") && l.contains("Marketo credentials")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("ok") && l.contains("Salesforce credentials")), "{out}");
    assert!(!out.contains(secret) && !err.contains(secret), "secret printed:\n{out}\n{err}");
}

#[test]
fn configuration_errors_exit_2_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let var = |k: &str, v: &str| (k.to_string(), v.to_string());

    let env = [var("SALESYNC_MARKETO_URL", "http://127.0.0.1:1")];
    let (code, out, err) = run(dir.path(), &env, &["sync", "--once"]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("SALESYNC_MARKETO_CLIENT_ID"), "{err}");

    let env = [var("SALESYNC_POLL_INTERVAL_SECS", "soon")];
    let (code, _, err) = run(dir.path(), &env, &["sync", "--once"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("SALESYNC_POLL_INTERVAL_SECS"), "{err}");

    let env = [var("SALESYNC_STORE", &format!("sqlite://{}", dir.path().join("m.db").display()))];
    let (code, _, err) = run(dir.path(), &env, &["people", "--owner", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--owner"), "{err}");
}
