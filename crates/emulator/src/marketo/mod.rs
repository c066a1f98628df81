//! Marketo Engage REST API emulator (work in progress).
