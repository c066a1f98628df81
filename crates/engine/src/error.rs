//! The engine's error type.

use salesync_core::ports::store::StreamId;

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a sync pass or a host call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A port (Marketo, Salesforce or the store) failed; retryable errors were already retried.
    #[error("{0}")]
    Port(#[from] salesync_core::Error),
    /// The pass was cancelled; everything applied so far is consistent with its checkpoint.
    #[error("sync cancelled")]
    Cancelled,
    /// The builder was given incomplete or invalid settings.
    #[error("invalid engine configuration `{field}`: {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A stored checkpoint could not be read (written by an incompatible version, or edited).
    #[error("checkpoint of stream {stream:?} is unreadable: {detail}")]
    Checkpoint {
        /// The stream.
        stream: StreamId,
        /// Why.
        detail: String,
    },
    /// Another process holds the Marketo pull's leader lease (or this engine lost it mid-pass,
    /// before committing another page): this engine did not pull. Try again later;
    /// [`SyncEngine::run`](crate::SyncEngine::run) does so by itself.
    #[error("not the leader: another process holds the `{lease}` lease (this engine is `{holder}`)")]
    NotLeader {
        /// The lease name.
        lease: &'static str,
        /// This engine's holder id.
        holder: String,
    },
    /// A bulk export job failed repeatedly, or its file could not be read.
    #[error("bulk export {export_id}: {detail}")]
    Export {
        /// The export job id.
        export_id: String,
        /// What happened.
        detail: String,
    },
}

impl Error {
    /// True when running the pass again later may succeed (transient port failures).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Port(e) => e.is_retryable(),
            Error::Export { .. } | Error::NotLeader { .. } => true,
            Error::Cancelled | Error::Config { .. } | Error::Checkpoint { .. } => false,
        }
    }
}
