//! Placeholder; replaced once the Salesforce emulator lands.
#![allow(missing_docs)]
fn main() {}
