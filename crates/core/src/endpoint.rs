//! What both connectors need to know about a service URL before talking to it: whether it is
//! on this machine (plain `http://` is allowed there only), and how to name it in messages and
//! `Debug` output without the credentials, query or fragment it may carry.

use std::net::IpAddr;

use url::Url;

/// True when the URL's host is this machine: `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// A URL fit for messages: no userinfo, query or fragment.
pub fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// A URL as given, fit for `Debug`: parsed and [`redacted`], or a placeholder when unparsable
/// (the raw text may hold a secret that made it unparsable).
pub fn redacted_text(raw: &str) -> String {
    Url::parse(raw.trim()).map_or_else(|_| "(not a URL)".to_string(), |u| redacted(&u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for u in
            ["http://localhost:8080", "http://LOCALHOST", "http://127.0.0.1", "http://127.9.9.9/x", "http://[::1]:1"]
        {
            assert!(is_loopback(&Url::parse(u).unwrap()), "{u}");
        }
        for u in ["http://10.0.0.1", "https://123-abc-456.mktorest.com", "http://localhost.example.com", "http://[::2]"]
        {
            assert!(!is_loopback(&Url::parse(u).unwrap()), "{u}");
        }
    }

    #[test]
    fn redaction_drops_credentials_query_and_fragment() {
        let u = Url::parse("https://user:hunter2@login.example.com/services?token=abc#frag").unwrap();
        assert_eq!(redacted(&u), "https://login.example.com/services");
        assert_eq!(redacted_text(" https://a:b@x.example.com/?secret=1 "), "https://x.example.com/");
        assert_eq!(redacted_text("hunter2 and not a URL"), "(not a URL)", "unparsable text is not echoed");
    }
}
