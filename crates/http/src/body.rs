//! Response bodies: a capped read, HTML sniffing and snippets for messages.

use reqwest::Response;

/// Why a body could not be read by [`read_capped`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The body is (or declares itself) larger than the cap.
    #[error("response body exceeds {cap} bytes")]
    TooLarge {
        /// The cap that was exceeded, in bytes.
        cap: usize,
    },
    /// The connection failed while the body was read.
    #[error("reading the response body failed")]
    Transport(#[source] reqwest::Error),
}

/// Reads a whole body into memory, refusing more than `cap` bytes: at once when the declared
/// `Content-Length` is larger, else as soon as the chunks received pass it.
pub async fn read_capped(mut resp: Response, cap: usize) -> Result<Vec<u8>, ReadError> {
    if let Some(len) = resp.content_length()
        && len > cap as u64
    {
        return Err(ReadError::TooLarge { cap });
    }
    // A declared length is a hint only: never reserve more than 1 MiB up front on its word.
    let hint = resp.content_length().map_or(8 * 1024, |l| usize::try_from(l).unwrap_or(cap).min(1024 * 1024));
    let mut buf = Vec::with_capacity(hint.min(cap));
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        if buf.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge { cap });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Whether a body is an HTML document (an error page of a proxy, a load balancer or a login
/// wall): after leading whitespace it starts, in any case, with `<!doctype html`, `<html`,
/// `<head` or `<body`.
pub fn looks_like_html(body: &[u8]) -> bool {
    let start = body.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(body.len());
    let head = String::from_utf8_lossy(&body[start..body.len().min(start + 64)]).to_ascii_lowercase();
    ["<!doctype html", "<html", "<head", "<body"].iter().any(|p| head.starts_with(p))
}

/// The message for an HTML page received where `expected` (e.g. `JSON`, `the CSV file`) was:
/// names the status and shows `snippet`, the start of the page.
pub fn html_instead_of(status: u16, expected: &str, snippet: &str) -> String {
    format!("HTTP {status} answered with an HTML page instead of {expected} (a proxy or login page?): {snippet}")
}

/// The start of a body for messages: its first `max_bytes` bytes (invalid UTF-8 replaced), at
/// most `max_chars` characters of them, trimmed.
pub fn snippet(body: &[u8], max_bytes: usize, max_chars: usize) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(max_bytes)]);
    let s: String = s.chars().take(max_chars).collect();
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_pages_are_recognised() {
        for body in [
            &b"<!DOCTYPE html><html>"[..],
            b"  \n<html><body>Bad gateway</body></html>",
            b"<HEAD><title>x</title>",
            b"<body>Sign in</body>",
        ] {
            assert!(looks_like_html(body), "{}", String::from_utf8_lossy(body));
        }
        for body in [&b"{\"a\":1}"[..], b"[]", b"", b"   ", b"<?xml version=\"1.0\"?>", b"html"] {
            assert!(!looks_like_html(body), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn html_messages_name_status_expectation_and_page() {
        assert_eq!(
            html_instead_of(200, "JSON", "<html>Sign in"),
            "HTTP 200 answered with an HTML page instead of JSON (a proxy or login page?): <html>Sign in"
        );
    }

    #[test]
    fn snippets_are_capped_and_trimmed() {
        assert_eq!(snippet(b"  short  ", 120, 120), "short");
        assert_eq!(snippet(&[b'a'; 500], 120, 120).len(), 120);
        assert_eq!(snippet(&[b'a'; 500], 400, 200).len(), 200);
        let e = "é".repeat(300);
        assert_eq!(snippet(e.as_bytes(), 400, 200).chars().count(), 200);
        // A character cut by the byte cap becomes U+FFFD, not a panic.
        assert_eq!(snippet("aé".as_bytes(), 2, 10), "a\u{fffd}");
    }
}
