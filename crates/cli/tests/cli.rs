#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `salesync` binary end to end: `salesync emulate` runs as a child process on loopback, and
//! every other command runs against it with its configuration in `SALESYNC_*` variables.

use std::collections::HashMap;
use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;
use support::EmulateChild;

mod support;

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

/// A `salesync emulate` child with the test's people and seed, limits off.
fn emulator() -> EmulateChild {
    EmulateChild::start(&["--people", &PEOPLE.to_string(), "--seed", &SEED.to_string(), "--no-limits"])
}

/// The variables that point the command at `emu`, with a SQLite store in `dir`.
fn command_env(emu: &EmulateChild, dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = emu
        .vars(&[
            ("SALESYNC_MARKETO_URL", "marketo_url"),
            ("SALESYNC_MARKETO_CLIENT_ID", "marketo_client_id"),
            ("SALESYNC_MARKETO_CLIENT_SECRET", "marketo_client_secret"),
            ("SALESYNC_SALESFORCE_URL", "salesforce_url"),
            ("SALESYNC_SALESFORCE_CLIENT_ID", "salesforce_client_id"),
            ("SALESYNC_SALESFORCE_CLIENT_SECRET", "salesforce_client_secret"),
        ])
        .into_iter()
        .map(|(var, value)| (var.to_string(), value))
        .collect();
    v.push(("SALESYNC_STORE".into(), format!("sqlite://{}", dir.join("m.db").display())));
    v.push(("SALESYNC_INITIAL_MODE".into(), "rest".into()));
    v
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
    let emu = emulator();
    let dir = tempfile::tempdir().unwrap();
    let env = command_env(&emu, dir.path());

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

    // Resync of one person: right already, so nothing is written; an id Marketo does not have
    // and the mirror does not hold is neither.
    let out = ok(dir.path(), &env, &["resync", "--person", &person]);
    assert_eq!(out.trim(), format!("resync: person {person} is right already"));
    let out = ok(dir.path(), &env, &["resync", "--person", "999999999"]);
    assert_eq!(out.trim(), "resync: person 999999999 is neither in Marketo nor in the mirror");

    // Rebuild: nothing to discard; a rebuild of a current mirror swaps in no difference.
    let out = ok(dir.path(), &env, &["rebuild", "--discard"]);
    assert_eq!(out.trim(), "rebuild: none in progress");
    let out = ok(dir.path(), &env, &["rebuild"]);
    assert!(
        out.contains("  rebuild: done; the shadow copy replaced the mirror (0 inserted, 0 updated, 0 removed)"),
        "{out}"
    );
    let status = ok(dir.path(), &env, &["status"]);
    assert!(status.contains(&format!("people in mirror: {qualified}")), "{status}");
    assert!(!status.contains("rebuild"), "{status}");

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
    let emu = emulator();
    let dir = tempfile::tempdir().unwrap();
    let secret = "wrong-secret-4b1d9c";
    let mut env = command_env(&emu, dir.path());
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

/// The `host:port` of a URL (what `salesync` binds the store to).
fn host_port(url: &str) -> String {
    url.split("://").nth(1).unwrap().split('/').next().unwrap().to_string()
}

/// Fails when `text` holds a secret, a Marketo emulator token (`<uuid>:emu`) or a Salesforce
/// one (`<org id>!AQ0A…`).
fn assert_no_secret(place: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!text.contains(s.as_str()), "{place} shows the secret {s:?}:\n{text}");
    }
    for marker in [":emu", "!AQ0A", "%21AQ0A"] {
        assert!(!text.contains(marker), "{place} shows an access token ({marker}):\n{text}");
    }
}

#[test]
fn trace_logging_never_prints_secrets_tokens_or_store_passwords() {
    let emu = emulator();
    // `salesync emulate` listens on loopback unless told otherwise (--bind).
    for key in ["marketo_url", "salesforce_url"] {
        assert!(emu.get(key).starts_with("http://127.0.0.1:"), "{key}: {}", emu.get(key));
    }
    let dir = tempfile::tempdir().unwrap();
    let refresh = "salesync-emulator-refresh-token".to_string();
    let pg_password = "S3cretPgPass";
    let mut env = command_env(&emu, dir.path());
    env.push(("SALESYNC_LOG".into(), "trace".into()));
    env.push(("RUST_LOG".into(), "trace".into()));
    env.push(("SALESYNC_SALESFORCE_REFRESH_TOKEN".into(), refresh.clone()));
    let secrets =
        vec![emu.get("marketo_client_secret"), emu.get("salesforce_client_secret"), refresh, pg_password.to_string()];
    let mut all = String::new();
    let mut step = |args: &[&str], env: &[(String, String)], want: i32| {
        let (code, out, err) = run(dir.path(), env, args);
        assert_eq!(code, want, "salesync {args:?}\nstdout:\n{out}\nstderr:\n{err}");
        assert_no_secret(&format!("salesync {args:?} stdout"), &out, &secrets);
        assert_no_secret(&format!("salesync {args:?} stderr"), &err, &secrets);
        all.push_str(&err);
        out
    };

    // A full pass, a recorded activity delivered by a second pass, status and doctor.
    step(&["sync", "--once"], &env, 0);
    let people = jsonl(&step(&["people", "--format", "jsonl"], &env, 0));
    let person = people[0]["marketo_id"].as_i64().unwrap().to_string();
    step(&["activity", "record", "--kind", "sales-call", "--person", &person, "--subject", "Call"], &env, 0);
    step(&["unsubscribe", "--person", &person], &env, 0);
    step(&["reminder", "create", "--person", &person, "--subject", "Call back"], &env, 0);
    let out = step(&["sync", "--once"], &env, 0);
    assert!(out.contains("delivery: 1 to Marketo"), "{out}");
    step(&["status"], &env, 0);
    step(&["doctor"], &env, 0);
    // The logs really were on, for the HTTP client and the SQL driver too.
    for target in ["TRACE", "salesync_marketo", "salesync_salesforce", "sqlx::query"] {
        assert!(all.contains(target), "no {target} in the logs: is SALESYNC_LOG=trace honoured?");
    }

    // Wrong secrets: doctor fails, naming what, not the secret.
    let mut wrong = env.clone();
    for (k, v) in wrong.iter_mut() {
        match k.as_str() {
            "SALESYNC_MARKETO_CLIENT_SECRET" => *v = "wrong-mkto-S3CRET-1f2e".into(),
            "SALESYNC_SALESFORCE_REFRESH_TOKEN" => *v = "wrong-sf-REFRESH-3d4c".into(),
            _ => {}
        }
    }
    let mut wrong_secrets = secrets.clone();
    wrong_secrets.extend(["wrong-mkto-S3CRET-1f2e".to_string(), "wrong-sf-REFRESH-3d4c".to_string()]);
    let (code, out, err) = run(dir.path(), &wrong, &["doctor"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("FAIL  Marketo credentials") && out.contains("FAIL  Salesforce credentials"), "{out}");
    assert_no_secret("doctor with wrong secrets", &format!("{out}\n{err}"), &wrong_secrets);
    let (code, out, err) = run(dir.path(), &wrong, &["sync", "--once"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert_no_secret("sync with wrong secrets", &format!("{out}\n{err}"), &wrong_secrets);

    // A PostgreSQL store URL with a password: errors show the URL with the password masked.
    let mut pg = env.clone();
    for (k, v) in pg.iter_mut() {
        if k == "SALESYNC_STORE" {
            *v = format!("postgres://postgres:{pg_password}@127.0.0.1:5432/salesync_no_such_database");
        }
    }
    for args in [&["status"][..], &["doctor"], &["sync", "--once"], &["people"]] {
        let (code, out, err) = run(dir.path(), &pg, args);
        assert_ne!(code, 0, "salesync {args:?}\nstdout:\n{out}\nstderr:\n{err}");
        let text = format!("{out}\n{err}");
        assert!(text.contains("postgres://postgres:***@127.0.0.1:5432/salesync_no_such_database"), "{text}");
        assert_no_secret(&format!("salesync {args:?} with a PostgreSQL password"), &text, &secrets);
    }
}

#[test]
fn a_store_synced_from_one_marketo_instance_is_refused_for_another() {
    let (a, b) = (emulator(), emulator());
    let dir = tempfile::tempdir().unwrap();
    let (env_a, env_b) = (command_env(&a, dir.path()), command_env(&b, dir.path()));
    let (inst_a, inst_b) = (host_port(&a.get("marketo_url")), host_port(&b.get("marketo_url")));
    assert_ne!(inst_a, inst_b);

    ok(dir.path(), &env_a, &["sync", "--once"]);
    let mirror = ok(dir.path(), &env_a, &["people", "--format", "jsonl"]);
    let status = ok(dir.path(), &env_a, &["status"]);
    let person = jsonl(&mirror)[0]["marketo_id"].as_i64().unwrap().to_string();

    // Instance B's sync, activity recording and delivery are all refused, naming both instances.
    for args in [
        &["sync", "--once"][..],
        &["activity", "record", "--kind", "send-sales-email", "--person", &person, "--subject", "Hi"],
        &["unsubscribe", "--person", &person],
        &["reminder", "create", "--person", &person, "--subject", "Call back"],
    ] {
        let (code, out, err) = run(dir.path(), &env_b, args);
        assert_eq!(code, 1, "salesync {args:?} against instance B\nstdout:\n{out}\nstderr:\n{err}");
        assert!(err.contains(&inst_a) && err.contains(&inst_b), "salesync {args:?}: {err}");
        assert!(err.contains("bound to Marketo instance"), "{err}");
    }
    // The long-running `sync` stops too, instead of retrying forever.
    let out = salesync(dir.path())
        .envs(env_b.iter().map(|(k, v)| (k, v)))
        .arg("sync")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "salesync sync against instance B: {err}");
    assert!(err.contains(&inst_a) && err.contains(&inst_b), "{err}");
    // Nothing changed: the mirror, the checkpoints and the outbox are A's as they were.
    assert_eq!(ok(dir.path(), &env_a, &["people", "--format", "jsonl"]), mirror);
    assert_eq!(ok(dir.path(), &env_a, &["status"]), status);
    // A itself still works.
    ok(dir.path(), &env_a, &["sync", "--once"]);
}

#[test]
fn plain_http_to_a_host_that_is_not_loopback_needs_an_explicit_setting() {
    let emu = emulator();
    let dir = tempfile::tempdir().unwrap();
    // 0.0.0.0 is not a loopback address, yet reaches the emulator on this machine.
    let remote = emu.get("marketo_url").replace("127.0.0.1", "0.0.0.0");
    let mut env = command_env(&emu, dir.path());
    for (k, v) in env.iter_mut() {
        if k == "SALESYNC_MARKETO_URL" {
            *v = format!("{remote}/?client_secret=q5ecret");
        }
    }
    let (code, out, err) = run(dir.path(), &env, &["sync", "--once"]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&remote) && !err.contains("q5ecret"), "{err}");
    assert!(
        err.contains("SALESYNC_MARKETO_ALLOW_INSECURE_HTTP") && err.contains("SALESYNC_ALLOW_INSECURE_HTTP"),
        "{err}"
    );
    let (code, out, _) = run(dir.path(), &env, &["doctor"]);
    assert_eq!(code, 1);
    assert!(out.lines().any(|l| l.starts_with("FAIL") && l.contains("allow_insecure_http")), "{out}");

    for allow in ["SALESYNC_ALLOW_INSECURE_HTTP", "SALESYNC_MARKETO_ALLOW_INSECURE_HTTP"] {
        let mut allowed = env.clone();
        allowed.push((allow.to_string(), "true".into()));
        let out = ok(dir.path(), &allowed, &["doctor"]);
        assert!(out.contains("ok    Marketo credentials"), "{allow}: {out}");
    }
}
