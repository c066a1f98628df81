#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]
//! Fidelity in CI (issue #14): three unmodified popular clients from PyPI — marketorestpython,
//! simple-salesforce and tap-marketo, pinned in `tests/clients/requirements.txt` — run their normal
//! flows against `salesync emulate` with only the base URL changed (`tests/clients/*_flows.py`,
//! one `PASS name` / `FAIL name: why` line per flow and a closing `SUMMARY {json}`).
//!
//! The virtual environment lives under the target dir (`CARGO_TARGET_TMPDIR/clients-venv`) and is
//! reused while it holds exactly the pinned requirements; otherwise it is rebuilt from PyPI. This
//! test never skips: no Python, no `venv` module, a failed `pip install` or a failed flow all fail
//! it, with the reason. `SALESYNC_TEST_PYTHON` picks the interpreter (default: python3.11, else
//! python3). Each client gets its own fresh emulator (`--people 500`, real limits), and the three
//! run in parallel.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::EmulateChild;

mod support;

const PEOPLE: usize = 500;
/// A client run longer than this is killed and fails the test.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn scripts() -> PathBuf {
    repo().join("tests/clients")
}

fn output(cmd: &mut Command) -> (bool, String) {
    match cmd.output() {
        Ok(o) => (
            o.status.success(),
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        ),
        Err(e) => (false, format!("could not run {cmd:?}: {e}")),
    }
}

/// The interpreter the venv is made from.
fn python() -> String {
    if let Ok(p) = std::env::var("SALESYNC_TEST_PYTHON") {
        return p;
    }
    for p in ["python3.11", "python3"] {
        if output(Command::new(p).arg("--version")).0 {
            return p.to_string();
        }
    }
    panic!("no Python found (python3.11 or python3; or set SALESYNC_TEST_PYTHON): the client fidelity test needs one");
}

/// The venv with exactly `tests/clients/requirements.txt` installed: reused when its marker holds
/// the same requirements, else made afresh.
fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clients-venv");
    let py = dir.join("bin/python");
    let reqs_path = scripts().join("requirements.txt");
    let reqs = std::fs::read_to_string(&reqs_path).unwrap();
    let marker = dir.join("salesync-requirements.txt");
    if py.exists() && std::fs::read_to_string(&marker).is_ok_and(|m| m == reqs) {
        let (ok, out) = output(Command::new(&py).args(["-m", "pip", "check", "--disable-pip-version-check"]));
        if ok {
            println!("clients: reusing {}", dir.display());
            return dir;
        }
        println!("clients: {} fails `pip check` ({}); rebuilding it", dir.display(), out.trim());
    }
    let start = Instant::now();
    let _ = std::fs::remove_dir_all(&dir);
    let interp = python();
    let (ok, out) = output(Command::new(&interp).args(["-m", "venv"]).arg(&dir));
    assert!(ok, "`{interp} -m venv {}` failed (is the venv module installed?):\n{out}", dir.display());
    let (ok, out) = output(
        Command::new(&py)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", "-r"])
            .arg(&reqs_path),
    );
    assert!(ok, "pip could not install the pinned clients from {} into {}:\n{out}", reqs_path.display(), dir.display());
    let (ok, out) = output(Command::new(&py).args(["-m", "pip", "check", "--disable-pip-version-check"]));
    assert!(ok, "the installed clients have broken requirements:\n{out}");
    std::fs::write(&marker, &reqs).unwrap();
    println!(
        "clients: installed {} into {} in {:.1} s",
        reqs_path.display(),
        dir.display(),
        start.elapsed().as_secs_f64()
    );
    dir
}

/// The variables the flow scripts read: where `emu` listens and its credentials.
fn script_env(emu: &EmulateChild) -> Vec<(&'static str, String)> {
    emu.vars(&[
        ("MKTO_URL", "marketo_url"),
        ("MKTO_ID", "marketo_client_id"),
        ("MKTO_SECRET", "marketo_client_secret"),
        ("SF_URL", "salesforce_url"),
        ("SF_ID", "salesforce_client_id"),
        ("SF_SECRET", "salesforce_client_secret"),
    ])
}

/// One client's run: its output, exit status and SUMMARY.
struct Run {
    client: &'static str,
    output: String,
    stderr: String,
    success: bool,
    seconds: f64,
    summary: Option<Value>,
}

fn run_client(venv: &Path, client: &'static str, script: &str) -> Run {
    let emu = EmulateChild::start(&["--people", &PEOPLE.to_string(), "--seed", "1"]);
    let start = Instant::now();
    let mut child = Command::new(venv.join("bin/python"))
        .arg(scripts().join(script))
        .current_dir(scripts())
        .envs(script_env(&emu))
        .env("PEOPLE", PEOPLE.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{client}: could not start {script}: {e}"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = out_reader.join().unwrap();
    let mut stderr = err_reader.join().unwrap();
    if status.is_none() {
        stderr.push_str(&format!("\n{client}: killed after {} s\n", CLIENT_TIMEOUT.as_secs()));
    }
    let summary =
        output.lines().rev().find_map(|l| l.strip_prefix("SUMMARY ")).and_then(|j| serde_json::from_str(j).ok());
    Run {
        client,
        output,
        stderr,
        success: status.is_some_and(|s| s.success()),
        seconds: start.elapsed().as_secs_f64(),
        summary,
    }
}

#[test]
fn popular_clients_run_their_normal_flows_against_the_emulators() {
    let start = Instant::now();
    let venv = venv();
    let install_s = start.elapsed().as_secs_f64();
    let clients: [(&'static str, &str); 3] = [
        ("marketorestpython", "marketorestpython_flows.py"),
        ("simple-salesforce", "simple_salesforce_flows.py"),
        ("tap-marketo", "tap_marketo_flows.py"),
    ];
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> =
            clients.iter().map(|(client, script)| s.spawn(|| run_client(&venv, client, script))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for r in &runs {
        println!("---- {} ({:.1} s)\n{}", r.client, r.seconds, r.output.trim_end());
        let (run, passed) =
            r.summary.as_ref().map_or((0, 0), |s| (s["run"].as_u64().unwrap_or(0), s["passed"].as_u64().unwrap_or(0)));
        if !r.success || r.summary.is_none() || run == 0 || run != passed {
            let fails: Vec<&str> = r.output.lines().filter(|l| l.starts_with("FAIL ")).collect();
            let tail: String = {
                let lines: Vec<&str> = r.stderr.lines().collect();
                lines[lines.len().saturating_sub(30)..].join("\n")
            };
            failures.push(format!(
                "{}: {passed} of {run} flows passed{}\n{}\nstderr (tail):\n{tail}",
                r.client,
                if r.summary.is_none() { " (no SUMMARY line: the script did not finish)" } else { "" },
                fails.join("\n")
            ));
        }
    }
    println!("clients: venv ready in {install_s:.1} s; total {:.1} s", start.elapsed().as_secs_f64());
    for r in &runs {
        let (run, passed) =
            r.summary.as_ref().map_or((0, 0), |s| (s["run"].as_u64().unwrap_or(0), s["passed"].as_u64().unwrap_or(0)));
        println!("clients: {}: {passed} / {run} flows passed ({:.1} s)", r.client, r.seconds);
    }
    assert!(failures.is_empty(), "client flows failed against the emulators:\n\n{}", failures.join("\n\n"));
}
