//! An injectable clock, so token expiry, rate windows and retention can be tested without waiting.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// Source of "now" for an emulator.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A manual clock shared by every clone; tests move it with [`Clock::advance`].
    Manual(Arc<Mutex<DateTime<Utc>>>),
}

impl Clock {
    /// A manual clock starting at `start`.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Clock::Manual(Arc::new(Mutex::new(start)))
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(t) => match t.lock() {
                Ok(g) => *g,
                Err(poisoned) => *poisoned.into_inner(),
            },
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(t) = self {
            let mut g = match t.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            *g += by;
        }
    }

    /// Sets a manual clock; no effect on the system clock.
    pub fn set(&self, to: DateTime<Utc>) {
        if let Clock::Manual(t) = self {
            let mut g = match t.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            *g = to;
        }
    }
}
