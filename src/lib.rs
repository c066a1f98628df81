//! salesync
