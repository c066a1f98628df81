//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the files it finds at
//! compile time, and on stable Rust it cannot tell Cargo to watch the directory itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
