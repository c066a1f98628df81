//! Configuration parsing: store URLs (`salesync_store::check_url`, no I/O) and the `salesync`
//! command's TOML + environment configuration (`crates/cli/src/config.rs`, compiled in here
//! because the command is a binary crate).
//!
//! Properties: nothing panics; a password in a store URL never appears in a store URL error; a
//! secret given in the environment never appears in the configuration's `Debug` text, nor does
//! the store URL's password.
#![no_main]

#[allow(dead_code, missing_docs)]
#[path = "../../crates/cli/src/config.rs"]
mod cli_config;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

const SCHEMES: &[&str] = &["sqlite", "postgres", "postgresql", "memory", "mysql", "SQLite", "Postgres"];
const PW: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=%:@/?#[]";

#[derive(Debug, Arbitrary)]
struct StoreUrl {
    scheme: u8,
    user: String,
    password: Vec<u8>,
    host: String,
    rest: String,
}

#[derive(Debug, Arbitrary)]
struct Input {
    url: StoreUrl,
    raw_url: String,
    toml: String,
    env: Vec<(u8, String)>,
    secrets: [Vec<u8>; 3],
}

/// A password made of URL characters, long and distinctive enough not to match by chance.
fn password(bytes: &[u8]) -> String {
    let mut s = String::from("Pw7");
    s.extend(bytes.iter().map(|b| char::from(PW[usize::from(*b) % PW.len()])));
    while s.len() < 10 {
        s.push('q');
    }
    s
}

fn check_store_url(url: &str, pw: Option<&str>) {
    if let Err(e) = salesync_store::check_url(url) {
        let msg = e.to_string();
        if let Some(pw) = pw {
            assert!(!msg.contains(pw), "password {pw:?} in {msg:?}");
        }
    }
}

/// The password the URL parser (and so the database driver) would use.
fn parsed_password(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    u.password().filter(|p| p.len() >= 8).map(str::to_string)
}

fuzz_target!(|input: Input| {
    // Store URLs built with a known password.
    let u = &input.url;
    let pw = password(&u.password);
    let scheme = SCHEMES[usize::from(u.scheme) % SCHEMES.len()];
    // A user name with URL delimiters (`/?#@:`) would make the "password" part of the path or
    // query instead: keep it plain, so the password is one to the URL parser and the driver.
    let user: String = u.user.chars().filter(char::is_ascii_alphanumeric).collect();
    let url = format!("{scheme}://{user}:{pw}@{}{}", u.host, u.rest);
    check_store_url(
        &url,
        parsed_password(&url).as_deref().or(Some(pw.as_str())).filter(|p| url.matches(*p).count() == 1),
    );
    // The same password as a query parameter (`?` and `#` in host or path would move it into
    // another query parameter's value or the fragment, where it is no parameter).
    let plain = |s: &str| s.chars().filter(|c| !matches!(c, '?' | '#' | '&')).collect::<String>();
    let url = format!("{scheme}://{}/{}?password={pw}", plain(&u.host), plain(&u.rest));
    check_store_url(&url, Some(pw.as_str()).filter(|p| url.matches(*p).count() == 1));
    // Any text.
    check_store_url(
        &input.raw_url,
        parsed_password(&input.raw_url).as_deref().filter(|p| input.raw_url.matches(*p).count() == 1),
    );

    // The command's configuration.
    use cli_config::vars;
    let names = [
        vars::STORE,
        vars::MARKETO_URL,
        vars::MARKETO_CLIENT_ID,
        vars::MARKETO_RATE_CALLS,
        vars::MARKETO_RATE_WINDOW_SECS,
        vars::MARKETO_MAX_CONCURRENT,
        vars::SALESFORCE_URL,
        vars::SALESFORCE_CLIENT_ID,
        vars::SALESFORCE_API_VERSION,
        vars::POLL_INTERVAL_SECS,
        vars::INITIAL_MODE,
    ];
    let secret_names = [vars::MARKETO_CLIENT_SECRET, vars::SALESFORCE_CLIENT_SECRET, vars::SALESFORCE_REFRESH_TOKEN];
    let mut env: Vec<(&str, String)> =
        input.env.iter().map(|(k, v)| (names[usize::from(*k) % names.len()], v.clone())).collect();
    let secrets: Vec<String> = input.secrets.iter().map(|s| format!("SeCrEt{}", password(s))).collect();
    for (n, s) in secret_names.iter().zip(&secrets) {
        env.push((n, s.clone()));
    }
    let lookup = |k: &str| env.iter().rev().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let path = std::env::temp_dir().join(format!("salesync-fuzz-config-{}.toml", std::process::id()));
    if std::fs::write(&path, &input.toml).is_err() {
        return;
    }
    let loaded = cli_config::Config::load(Some(&path), &lookup);
    match loaded {
        Ok(cfg) => {
            let debug = format!("{cfg:?}");
            let elsewhere = |s: &str| input.toml.contains(s) || input.env.iter().any(|(_, v)| v.contains(s));
            for s in &secrets {
                assert!(elsewhere(s) || !debug.contains(s.as_str()), "secret in {debug}");
            }
            if let Some(pw) = parsed_password(&cfg.store)
                && !cfg.store.starts_with(&pw)
            {
                let shown = cli_config::redact_url(&cfg.store);
                assert!(!shown.contains(&pw), "store password {pw:?} shown as {shown:?}");
            }
        }
        Err(e) => {
            for s in &secrets {
                let msg = e.to_string();
                let elsewhere =
                    input.toml.contains(s.as_str()) || input.env.iter().any(|(_, v)| v.contains(s.as_str()));
                assert!(elsewhere || !msg.contains(s.as_str()), "secret in {msg}");
            }
        }
    }
});
