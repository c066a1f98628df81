//! Salesforce REST API emulator (work in progress).
