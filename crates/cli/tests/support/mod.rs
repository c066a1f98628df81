//! Process-level fixtures of the CLI tests: `salesync emulate` children, the `SALESYNC_*`
//! environment of a `salesync sync` child on a [`World`], a store shared by the test and its
//! children, and the `salesync sync` children themselves. The world, the oracle, the exactly-once
//! and rate-limit checks and the recording of outbound items come from the test kit (re-exported
//! here).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// Each test file uses a part.
#[allow(unused_imports)]
pub use salesync_testkit::{
    Outbound, Rng, TestStore, World, assert_delivered_exactly_once, assert_rate_limits_kept, enable_reminder_sync,
    outbox_drained, record_round, wait_for,
};

/// Paths only the engine's Marketo pull calls (delivery never reads leads or lead changes).
pub const PULL_PATHS: [&str; 4] = [
    "/rest/v1/leads.json",
    "/rest/v1/activities/leadchanges.json",
    "/rest/v1/activities/deletedleads.json",
    "/bulk/v1/leads/export",
];

/// True for a call of the Marketo pull.
pub fn is_pull(path: &str) -> bool {
    PULL_PATHS.iter().any(|p| path.starts_with(p))
}

/// The `SALESYNC_*` variables of a `salesync sync` child: `world`, `store_url`, the Marketo API
/// client `client` (index into `world.clients`), `rate_calls` per one-second window, fast polls
/// and short leases.
pub fn child_env(
    world: &World,
    store_url: &str,
    client: usize,
    rate_calls: u32,
    holder: &str,
) -> Vec<(String, String)> {
    let (id, secret) = &world.clients[client];
    [
        ("SALESYNC_STORE", store_url.to_string()),
        ("SALESYNC_MARKETO_URL", world.marketo.base_url()),
        ("SALESYNC_MARKETO_CLIENT_ID", id.clone()),
        ("SALESYNC_MARKETO_CLIENT_SECRET", secret.clone()),
        ("SALESYNC_MARKETO_RATE_CALLS", rate_calls.to_string()),
        ("SALESYNC_MARKETO_RATE_WINDOW_SECS", "1".into()),
        ("SALESYNC_MARKETO_MAX_CONCURRENT", "4".into()),
        ("SALESYNC_SALESFORCE_URL", world.salesforce.base_url()),
        ("SALESYNC_SALESFORCE_CLIENT_ID", world.salesforce.client_id().to_string()),
        ("SALESYNC_SALESFORCE_CLIENT_SECRET", world.salesforce.client_secret().to_string()),
        ("SALESYNC_POLL_INTERVAL_MS", "150".into()),
        ("SALESYNC_WORKER_ID", holder.to_string()),
        ("SALESYNC_LOG", "warn,salesync_engine=info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A running `salesync emulate` child; killed when dropped.
pub struct EmulateChild {
    child: Child,
    /// The first line it printed: where it listens and its credentials (JSON).
    line: serde_json::Value,
}

impl EmulateChild {
    /// Starts `salesync emulate [args]` and reads the line saying where it listens.
    pub fn start(args: &[&str]) -> EmulateChild {
        let mut child = Command::new(env!("CARGO_BIN_EXE_salesync"))
            .arg("emulate")
            .args(args)
            .env_remove("SALESYNC_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn salesync emulate");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let line = match serde_json::from_str(first.trim()) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                panic!("emulate printed {first:?}: {e}");
            }
        };
        EmulateChild { child, line }
    }

    /// A value of its first line (`marketo_url`, `marketo_client_id`, …).
    pub fn get(&self, key: &str) -> String {
        self.line[key].as_str().unwrap_or_else(|| panic!("{key} missing in {}", self.line)).to_string()
    }

    /// `(variable, value)` for each `(variable, key)` of `vars`.
    pub fn vars<'a>(&self, vars: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
        vars.iter().map(|(var, key)| (*var, self.get(key))).collect()
    }
}

impl Drop for EmulateChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A SQLite store shared by the test and its children, reminder Task sync on.
pub async fn shared_sqlite() -> TestStore {
    let shared = TestStore::sqlite().await;
    enable_reminder_sync(shared.store.as_ref()).await;
    shared
}

/// A fresh PostgreSQL schema shared by the test and its children (they reach it through
/// `search_path` in its URL), reminder Task sync on.
pub async fn shared_postgres(tag: &str) -> TestStore {
    let shared = TestStore::postgres(&format!("cli_{tag}")).await;
    enable_reminder_sync(shared.store.as_ref()).await;
    shared
}

/// A `salesync sync` child; SIGKILLed when dropped.
pub struct SyncChild {
    pub child: Child,
    pub name: String,
    pub err_log: PathBuf,
}

impl SyncChild {
    /// Starts `salesync sync [args]` in `dir` with exactly `env` (no inherited `SALESYNC_*`);
    /// stdout and stderr go to `<dir>/<name>.out|err`.
    pub fn spawn(dir: &Path, name: &str, env: &[(String, String)], args: &[&str]) -> SyncChild {
        let command: Vec<&str> = std::iter::once("sync").chain(args.iter().copied()).collect();
        Self::spawn_command(dir, name, env, &command)
    }

    /// Starts `salesync <command…>` like [`spawn`](Self::spawn).
    pub fn spawn_command(dir: &Path, name: &str, env: &[(String, String)], command: &[&str]) -> SyncChild {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_salesync"));
        cmd.current_dir(dir);
        for (k, _) in std::env::vars() {
            if k.starts_with("SALESYNC_") {
                cmd.env_remove(k);
            }
        }
        let out = std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
        let err_log = dir.join(format!("{name}.err"));
        let err = std::fs::File::create(&err_log).unwrap();
        let child = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(command)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        SyncChild { child, name: name.to_string(), err_log }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM (a clean shutdown), then the exit code once it exits (within 10 s).
    pub async fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("{} did not stop on SIGTERM; stderr:\n{}", self.name, self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err_log).unwrap_or_default()
    }
}

impl Drop for SyncChild {
    fn drop(&mut self) {
        self.kill();
    }
}
