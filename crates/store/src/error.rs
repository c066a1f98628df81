//! Private error helpers: every backend failure becomes a [`salesync_core::Error`] with context.

use salesync_core::Error;
use salesync_core::error::BoxError;

/// An error with a sentence of context in front of its source.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub(crate) struct WithContext {
    context: String,
    #[source]
    source: BoxError,
}

/// A plain message used as an error source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Message(pub(crate) String);

/// `Error::Backend` for `backend`, with `context` describing what was being done.
pub(crate) fn backend(backend: &'static str, context: impl Into<String>, source: impl Into<BoxError>) -> Error {
    Error::Backend { backend, source: Box::new(WithContext { context: context.into(), source: source.into() }) }
}

/// `Error::Backend` carrying only a message.
pub(crate) fn backend_msg(backend: &'static str, message: impl Into<String>) -> Error {
    Error::Backend { backend, source: Box::new(Message(message.into())) }
}

/// A JSON (de)serialization failure of a stored value.
pub(crate) fn json(backend: &'static str, what: &str, e: serde_json::Error) -> Error {
    crate::error::backend(backend, format!("stored {what} is not valid JSON for this salesync"), e)
}

/// The conflict raised when a store is already bound to another Marketo instance.
pub(crate) fn instance_conflict(bound: &str, requested: &str) -> Error {
    Error::Conflict {
        what: "store instance",
        detail: format!(
            "this store is bound to Marketo instance {bound:?}, not {requested:?}; \
             use a separate database (or PostgreSQL schema) per Marketo instance"
        ),
    }
}

/// Where the userinfo of a URL (after `scheme://`) ends: its last `@` before the path, or, when
/// the part before the first `/`, `?` or `#` looks like `user:pass…` without an `@`, the last `@`
/// anywhere: a password written with an unencoded `/`, `?` or `#` must not be shown either
/// (found by fuzz/config). Over-redacting a URL with an `@` in its path or query is harmless.
fn userinfo_end(rest: &str) -> Option<usize> {
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    authority.rfind('@').or_else(|| rest.rfind('@').filter(|_| authority.contains(':')))
}

/// Redacts the password of a URL (userinfo or `password=` query parameter) for messages.
pub(crate) fn redact_url(url: &str) -> String {
    let url = redact_query_password(url);
    let url = url.as_str();
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let Some(at) = userinfo_end(rest) else { return url.to_string() };
    let userinfo = &rest[..at];
    let redacted = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_string(),
    };
    format!("{}://{}{}", &url[..scheme_end], redacted, &rest[at..])
}

fn redact_query_password(url: &str) -> String {
    let Some(q) = url.find('?') else { return url.to_string() };
    let (head, query) = url.split_at(q + 1);
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            // `ends_with`: a stray `?` before it (`…?/?password=…`) makes the key `/?password`.
            Some((k, _)) if k.to_ascii_lowercase().ends_with("password") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{head}{}", parts.join("&"))
}

/// The password in a URL's userinfo, if any (to scrub it from driver messages).
pub(crate) fn url_password(url: &str) -> Option<&str> {
    let scheme_end = url.find("://")?;
    let rest = &url[scheme_end + 3..];
    let at = userinfo_end(rest)?;
    let userinfo = &rest[..at];
    let colon = userinfo.find(':')?;
    Some(&userinfo[colon + 1..]).filter(|p| !p.is_empty())
}

/// Replaces every occurrence of the URL's password in `message` with `***`.
pub(crate) fn scrub(message: String, url: &str) -> String {
    match url_password(url) {
        Some(pw) => message.replace(pw, "***"),
        None => message,
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql {
    //! sqlx error classification shared by the SQL backends.

    use salesync_core::{Error, error::Service};

    /// Maps a migration failure; a database migrated by a newer salesync gets a clear message.
    pub(crate) fn migrate_error(
        backend: &'static str,
        migrator: &sqlx::migrate::Migrator,
        redacted: &str,
        e: sqlx::migrate::MigrateError,
    ) -> Error {
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        match e {
            sqlx::migrate::MigrateError::VersionMissing(v) => Error::Config {
                key: "store url".into(),
                reason: format!(
                    "the {backend} database {redacted} has schema version {v}, newer than this salesync knows \
                 (up to {known}); upgrade salesync or point it at another database"
                ),
            },
            other => super::backend(backend, format!("migrating {redacted}"), other),
        }
    }

    /// Maps a sqlx error to core's error: transient conditions (I/O, pool timeout, busy/locked,
    /// serialization failures) become `Unavailable` so callers may retry; constraint violations
    /// on ids become `InvalidInput`; everything else is `Backend` with context.
    pub(crate) fn map(backend: &'static str, context: &str, e: sqlx::Error) -> Error {
        match &e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                return Error::Unavailable {
                    service: Service::Store,
                    code: "connection".into(),
                    message: format!("{backend}: {context}: {e}"),
                    persistent: false,
                };
            }
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED (and extended codes); PostgreSQL:
                // 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available.
                let transient = match backend {
                    "sqlite" => code.parse::<i64>().is_ok_and(|c| c & 0xff == 5 || c & 0xff == 6),
                    _ => matches!(code.as_str(), "40001" | "40P01" | "55P03"),
                };
                if transient {
                    return Error::Unavailable {
                        service: Service::Store,
                        code,
                        message: format!("{backend}: {context}: {}", db.message()),
                        persistent: false,
                    };
                }
                if db.is_check_violation() {
                    return Error::InvalidInput {
                        field: "marketo_id".into(),
                        reason: format!(
                            "{context}: rejected by the {backend} schema ({}): ids must be positive",
                            db.message()
                        ),
                    };
                }
            }
            _ => {}
        }
        crate::error::backend(backend, context.to_string(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_with_unencoded_delimiters() {
        assert!(!redact_url("sqlite://?/?password=Pw7qqqqqqq").contains("Pw7"));
        for url in ["postgres://u:abc?def@h/db", "postgres://u:a/b#c@h:5432/db", "sqlite://:Pw7?qqqqqq@"] {
            let shown = redact_url(url);
            for secret in ["abc?def", "a/b#c", "Pw7?qqqqqq"] {
                assert!(!shown.contains(secret), "{url} shown as {shown}");
            }
            assert_eq!(scrub(format!("bad URL {url}"), url).matches("***").count(), 1, "{url}");
        }
        let err = crate::check_url("postgres://u:abc?def@h/db").map(|_| ()).unwrap_err().to_string();
        assert!(!err.contains("abc?def"), "{err}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?sslmode=disable&password=x"),
            "postgres://h/db?sslmode=disable&password=***"
        );
        assert_eq!(redact_url("sqlite://a/b.db"), "sqlite://a/b.db");
        assert_eq!(url_password("postgres://u:p%40ss@h/db"), Some("p%40ss"));
        assert_eq!(scrub("bad p%40ss here".into(), "postgres://u:p%40ss@h/db"), "bad *** here");
    }
}
