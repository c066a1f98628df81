//! Network failures, safe to show: without the URL (it may carry a client secret or a query
//! with personal data) and with the whole cause chain in the message.

/// A network failure of one operation (`identity`, `salesforce request`, …). The reqwest error,
/// its URL stripped, stays reachable as `source()`.
///
/// Its `Display` carries the whole cause chain ("identity: error sending request: client error
/// (Connect): tcp connect error: Connection refused (connection failed)"), because reqwest's own
/// `Display` stops at the first line and hosts often log only the top-level message; the kind
/// (`timed out`, `connection failed`, …) closes it.
#[derive(Debug, thiserror::Error)]
pub struct TransportError {
    operation: &'static str,
    #[source]
    source: reqwest::Error,
}

impl TransportError {
    /// The failure of `operation`; the URL is removed from `source`.
    pub fn new(operation: &'static str, source: reqwest::Error) -> Self {
        Self { operation, source: source.without_url() }
    }

    /// What failed, in words: `timed out`, `connection failed`, `connection broke while reading
    /// the response`, `request failed` or `HTTP error`.
    pub fn kind(&self) -> &'static str {
        let e = &self.source;
        if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "connection broke while reading the response"
        } else if e.is_request() {
            "request failed"
        } else {
            "HTTP error"
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.operation, self.source)?;
        let mut cause = std::error::Error::source(&self.source);
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        write!(f, " ({})", self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_server_times_out_and_the_message_says_so_without_the_url() {
        // Connections are queued by the kernel but never answered.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/oauth/token?client_secret=hush", silent.local_addr().unwrap());
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_millis(100)).build().unwrap();
        let e = TransportError::new("token request", client.get(&url).send().await.unwrap_err());
        let text = e.to_string();
        assert_eq!(e.kind(), "timed out");
        assert!(text.starts_with("token request: ") && text.ends_with(" (timed out)"), "{text}");
        assert!(!text.contains("hush") && !text.contains("127.0.0.1"), "no URL in {text}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
