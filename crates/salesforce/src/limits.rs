//! The `Sforce-Limit-Info` response header.

use salesync_core::ports::salesforce::ApiUsage;

/// The name of the header Salesforce puts on every REST response.
pub const LIMIT_INFO_HEADER: &str = "sforce-limit-info";

/// The connected app's own share, from the optional `per-app-api-usage=u/t(appName=…)` part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerAppUsage {
    /// Calls the app used.
    pub used: u64,
    /// The app's allocation.
    pub max: u64,
    /// The connected app's name.
    pub app_name: Option<String>,
}

/// One parsed `Sforce-Limit-Info` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitInfo {
    /// The org's rolling 24-hour usage (`api-usage=N/M`).
    pub api_usage: ApiUsage,
    /// The connected app's usage, when the org reports it.
    pub per_app: Option<PerAppUsage>,
}

/// Parses `api-usage=18/5000` optionally followed by `; per-app-api-usage=17/250(appName=sample-app)`.
///
/// Parts may come in any order and with any whitespace; unknown parts are ignored. Returns `None`
/// when there is no well-formed `api-usage` part.
pub fn parse_limit_info(header: &str) -> Option<LimitInfo> {
    let mut api_usage = None;
    let mut per_app = None;
    for part in header.split([';', ',']) {
        let Some((key, value)) = part.split_once('=') else { continue };
        match key.trim().to_ascii_lowercase().as_str() {
            "api-usage" => {
                if let Some((used, max, _)) = parse_ratio(value) {
                    api_usage = Some(ApiUsage { used, max });
                }
            }
            "per-app-api-usage" => {
                if let Some((used, max, app_name)) = parse_ratio(value) {
                    per_app = Some(PerAppUsage { used, max, app_name });
                }
            }
            _ => {}
        }
    }
    api_usage.map(|api_usage| LimitInfo { api_usage, per_app })
}

/// `17/250(appName=x)` → (17, 250, Some("x")).
fn parse_ratio(value: &str) -> Option<(u64, u64, Option<String>)> {
    let value = value.trim();
    let (ratio, rest) = match value.find('(') {
        Some(i) => (&value[..i], Some(&value[i + 1..])),
        None => (value, None),
    };
    let (used, max) = ratio.split_once('/')?;
    let used = used.trim().parse().ok()?;
    let max = max.trim().parse().ok()?;
    let app = rest.and_then(|r| {
        let r = r.trim_end().strip_suffix(')').unwrap_or(r);
        r.split_once('=').map(|(_, name)| name.trim().to_string())
    });
    Some((used, max, app))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_usage() {
        let i = parse_limit_info("api-usage=18/5000").unwrap();
        assert_eq!(i.api_usage, ApiUsage { used: 18, max: 5000 });
        assert_eq!(i.per_app, None);
        assert_eq!(i.api_usage.remaining(), 4982);
        let i = parse_limit_info("api-usage=960476/5900000").unwrap();
        assert_eq!(i.api_usage, ApiUsage { used: 960476, max: 5900000 });
    }

    #[test]
    fn parses_per_app_usage() {
        let i = parse_limit_info("api-usage=18/5000; per-app-api-usage=17/250(appName=sample-connected-app)").unwrap();
        assert_eq!(i.api_usage, ApiUsage { used: 18, max: 5000 });
        assert_eq!(i.per_app, Some(PerAppUsage { used: 17, max: 250, app_name: Some("sample-connected-app".into()) }));
        let i = parse_limit_info(" per-app-api-usage = 1/2 ;API-USAGE = 3/4 ").unwrap();
        assert_eq!(i.api_usage, ApiUsage { used: 3, max: 4 });
        assert_eq!(i.per_app, Some(PerAppUsage { used: 1, max: 2, app_name: None }));
    }

    #[test]
    fn rejects_garbage() {
        for h in ["", "api-usage", "api-usage=", "api-usage=1", "api-usage=a/b", "api-usage=-1/5", "x=1/2"] {
            assert_eq!(parse_limit_info(h), None, "{h}");
        }
        // A broken per-app part does not hide the org usage.
        let i = parse_limit_info("api-usage=1/2; per-app-api-usage=oops").unwrap();
        assert_eq!(i.per_app, None);
    }
}
