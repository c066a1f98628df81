#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod body;
mod config;
mod endpoint;
mod paging;
mod retry;
#[cfg(feature = "testing")]
pub mod testing;
mod token;
mod transport;
mod verdict;

pub use body::{ReadError, html_instead_of, looks_like_html, read_capped, snippet};
pub use config::{
    Checked, Connection, ConnectionRules, EnvKey, SettingError, builder_from_lookup, http_client, lookup_from,
    parse_flag, parse_key, parse_number, positive, redacted_secret, required_secret, required_text,
};
pub use endpoint::{ALLOW_INSECURE_HTTP_VAR, BoolVarError, UrlError, allow_insecure_http_from, check_url, parse_bool};
pub use paging::page_stream;
pub use retry::RetryConfig;
pub use token::{Fresh, Token, TokenCache};
pub use transport::TransportError;
pub use verdict::{Backoff, Verdict};
