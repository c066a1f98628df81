#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod body;
pub mod config;
mod endpoint;
mod paging;
mod retry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
mod transport;
mod verdict;

pub use body::{ReadError, html_instead_of, looks_like_html, read_capped, snippet};
pub use config::{EnvKey, SettingError};
pub use endpoint::{ALLOW_INSECURE_HTTP_VAR, BoolVarError, UrlError, allow_insecure_http_from, check_url, parse_bool};
pub use paging::page_stream;
pub use retry::RetryConfig;
pub use token::{Token, TokenCache};
pub use transport::TransportError;
pub use verdict::{Backoff, Verdict};
