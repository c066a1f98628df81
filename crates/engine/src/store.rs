//! The store concerns the engine asks for.

use salesync_core::ports::store::{CheckpointStore, InstanceBinding, LeaseStore, MirrorStore};

/// The store traits the engine uses: the instance binding, the people mirror (and through
/// [`MirrorStore::shadow`] its shadow copy, for a rebuild), the stream checkpoints and the
/// leader lease. It never touches the outbox, reminders, unsubscribes or admin settings.
///
/// Every type implementing the four is an `EngineStore` (blanket impl): any
/// [`Store`](salesync_core::ports::store::Store), an `Arc<dyn Store>` or `Arc<MemoryStore>`
/// (the store traits forward through `Arc` and `Box`), or a double implementing only these.
pub trait EngineStore:
    InstanceBinding + MirrorStore + CheckpointStore + LeaseStore + std::fmt::Debug + 'static
{
}

impl<T> EngineStore for T where
    T: InstanceBinding + MirrorStore + CheckpointStore + LeaseStore + std::fmt::Debug + 'static
{
}
