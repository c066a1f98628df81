//! The `salesync` command: run the emulators, sync, read the mirror, record outbound items,
//! report status and check the setup.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error. Errors are one
//! readable line on stderr (details with `-v`).
// A command-line program prints by design; the library crates never do.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod config;
mod output;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// salesync: Marketo Sales Insight Actions style sync of people and sales activity.
#[derive(Debug, Parser)]
#[command(name = "salesync", version, about)]
pub struct Cli {
    /// Configuration file (default: `salesync.toml` when present). Every key can be overridden
    /// by a `SALESYNC_*` environment variable; secrets come from the environment only.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More detail in logs and errors (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run both API emulators with seeded, mutually consistent data; prints one JSON line with
    /// their URLs, credentials and `settings` (limits, co-tenant, busy, latency, bulk timing),
    /// then serves until interrupted.
    Emulate(EmulateArgs),
    /// Run the engine: initial sync if the mirror is empty, then incremental, plus delivery.
    Sync {
        /// One full pass (sync and delivery), then exit. When another process leads the
        /// Marketo pull (holds the leader lease), the pull is skipped and only delivery runs.
        #[arg(long)]
        once: bool,
    },
    /// Read the mirror.
    People {
        /// Only people with this email (all duplicates).
        #[arg(long)]
        email: Option<String>,
        /// Only people owned by this Salesforce user id.
        #[arg(long)]
        owner: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Record sales activities.
    #[command(subcommand)]
    Activity(ActivityCommand),
    /// Record an unsubscribe (pushed to Salesforce by `sync`; never to Marketo).
    Unsubscribe {
        /// The person's Marketo id.
        #[arg(long)]
        person: i64,
    },
    /// Reminder tasks.
    #[command(subcommand)]
    Reminder(ReminderCommand),
    /// Put one person's mirror row right from a live read of Marketo and Salesforce (insert,
    /// update or remove, with the reason), touching no stream position. Needs the leader lease:
    /// stop a running `salesync sync` first, or wait for its lease to lapse.
    Resync {
        /// The person's Marketo id.
        #[arg(long)]
        person: i64,
    },
    /// Rebuild the whole mirror without downtime: a full initial sync into a shadow copy while
    /// hosts keep reading the current mirror (its streams kept current meanwhile), then one
    /// transaction that swaps the difference in, the changes made in between carried over.
    /// Resumes a rebuild that a crash or Ctrl-C interrupted. Needs the leader lease: stop a
    /// running `salesync sync` first (or have the host call `SyncEngine::start_rebuild`).
    Rebuild {
        /// Drop the rebuild in progress and its shadow copy instead; the mirror stays as it is.
        #[arg(long)]
        discard: bool,
    },
    /// Checkpoints, counts, outbox depth, last errors.
    Status,
    /// Check configuration, credentials, store and the Marketo instance.
    Doctor,
}

/// `salesync emulate` options.
#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// People to seed.
    #[arg(long, default_value_t = 1000)]
    pub people: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Marketo emulator port (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub marketo_port: u16,
    /// Salesforce emulator port (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub salesforce_port: u16,
    /// Turn off the emulated API limits (rate window, in-flight, daily quota, export bytes); the
    /// co-tenant then has no effect, random busy answers still apply.
    #[arg(long)]
    pub no_limits: bool,
    /// Marketo: calls per 20 s window that other integrations of the instance make, taken from
    /// the same 100-call window (with 50, salesync gets 50 per window and 606 beyond).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub co_tenant_calls: u32,
    /// Marketo: in-flight slots other integrations hold of the 10 allowed (615 beyond).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub co_tenant_in_flight: u32,
    /// Marketo: fraction (0..=1) of API calls answered 606 at random (seeded by --seed), as when
    /// other integrations burst. Such calls do no work and are not counted.
    #[arg(long = "busy-606", value_name = "FRACTION", default_value_t = 0.0, value_parser = fraction)]
    pub busy_606: f64,
    /// Marketo: fraction (0..=1) of API calls answered 615 at random (seeded by --seed).
    #[arg(long = "busy-615", value_name = "FRACTION", default_value_t = 0.0, value_parser = fraction)]
    pub busy_615: f64,
    /// Latency added to every admitted API call of both emulators, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub latency_ms: Option<u64>,
    /// Salesforce latency in milliseconds, instead of --latency-ms.
    #[arg(long, value_name = "MS")]
    pub salesforce_latency_ms: Option<u64>,
    /// Marketo: fixed emulator-clock time a bulk export spends processing, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub bulk_processing_ms: u64,
    /// Marketo: further bulk export processing time per 1,000 rows, in milliseconds (200 is
    /// realistic: about 3 min 20 s for a million rows).
    #[arg(long = "bulk-ms-per-1000-rows", value_name = "MS", default_value_t = 0)]
    pub bulk_ms_per_1000_rows: u64,
    /// Address both emulators listen on. Loopback by default: anything else exposes their fixed
    /// test credentials to the network, so it must be asked for explicitly.
    #[arg(long, value_name = "IP", default_value_t = std::net::IpAddr::from([127, 0, 0, 1]))]
    pub bind: std::net::IpAddr,
}

/// Parses a fraction in `0..=1` (for `--busy-606`, `--busy-615`).
fn fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("`{s}` is not a fraction between 0 and 1")),
    }
}

/// `salesync activity` subcommands.
#[derive(Debug, Subcommand)]
pub enum ActivityCommand {
    /// Record one sales activity.
    Record(RecordArgs),
}

/// `salesync activity record` options.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Kind: send-sales-email, open-sales-email, click-sales-email, replied-sales-email,
    /// sales-email-bounced, sales-call, added-to-sales-campaign, removed-from-sales-campaign.
    #[arg(long)]
    pub kind: String,
    /// The person's Marketo id.
    #[arg(long)]
    pub person: i64,
    /// Email subject / call subject.
    #[arg(long)]
    pub subject: Option<String>,
    /// The seller's email.
    #[arg(long)]
    pub sender: Option<String>,
    /// Sales campaign name.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Call status: completed, no-answer, cancelled, failed.
    #[arg(long)]
    pub call_status: Option<String>,
    /// Call duration in seconds.
    #[arg(long)]
    pub duration_secs: Option<u32>,
    /// Clicked link (click-sales-email).
    #[arg(long)]
    pub link: Option<String>,
    /// When it happened (RFC 3339; default now).
    #[arg(long)]
    pub at: Option<String>,
}

/// `salesync reminder` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReminderCommand {
    /// Create a reminder task.
    Create {
        /// The person's Marketo id.
        #[arg(long)]
        person: i64,
        /// Task name.
        #[arg(long)]
        subject: String,
        /// Due date (YYYY-MM-DD).
        #[arg(long)]
        due: Option<String>,
        /// High priority.
        #[arg(long)]
        high: bool,
        /// Details.
        #[arg(long)]
        details: Option<String>,
    },
    /// Complete a reminder task.
    Complete {
        /// Reminder id.
        id: String,
    },
    /// Reopen a completed reminder task.
    Reopen {
        /// Reminder id.
        id: String,
    },
    /// Delete a reminder task.
    Delete {
        /// Reminder id.
        id: String,
    },
}

/// Output formats of `people`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per line (13 fields in snake_case plus salesforce_type, owner_id).
    Jsonl,
    /// CSV with a header row.
    Csv,
}

/// A failure, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Usage or configuration problem (exit 2).
    #[error("configuration error: {0}")]
    Config(String),
    /// Runtime failure (exit 1).
    #[error("{0}")]
    Runtime(String),
    /// Writing to stdout failed; a closed pipe (`salesync people | head`) is not an error.
    #[error("writing output: {0}")]
    Output(std::io::Error),
}

impl From<config::ConfigError> for CliError {
    fn from(e: config::ConfigError) -> Self {
        CliError::Config(e.to_string())
    }
}

impl From<salesync::core::Error> for CliError {
    fn from(e: salesync::core::Error) -> Self {
        match e {
            salesync::core::Error::Config { key, reason } => CliError::Config(format!("{key}: {reason}")),
            other => CliError::Runtime(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("salesync: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Config(msg)) => {
            eprintln!("salesync: configuration error: {msg}");
            ExitCode::from(2)
        }
        Err(CliError::Runtime(msg)) => {
            eprintln!("salesync: {msg}");
            ExitCode::from(1)
        }
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e @ CliError::Output(_)) => {
            eprintln!("salesync: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,salesync=info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SALESYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
