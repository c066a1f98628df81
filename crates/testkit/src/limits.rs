//! The Marketo and Salesforce limits were kept.

use crate::world::World;

/// The limits were never exceeded: Marketo's own limits never turned a call away (606 rate,
/// 615 concurrency, 607 quota; every such answer in the call log was injected by a fault plan or
/// the busy model), no window held more counted calls than [`World::limits`] allows, no more
/// calls were in flight than it allows, and Salesforce's daily API allocation was not exceeded.
pub fn check_rate_limits(world: &World) -> Result<(), String> {
    let rejected = world.marketo.limit_rejections();
    if rejected.rate + rejected.concurrency + rejected.quota > 0 {
        return Err(format!(
            "Marketo's limits turned calls away: {} × 606 (rate), {} × 615 (concurrency), {} × 607 (quota)",
            rejected.rate, rejected.concurrency, rejected.quota
        ));
    }
    let log = world.marketo.call_log();
    let refused: Vec<_> = log.iter().filter(|c| matches!(c.outcome.as_deref(), Some("606" | "615" | "607"))).collect();
    let injected = rejected.rate_injected + rejected.concurrency_injected;
    if refused.len() as u64 > injected {
        let shown: Vec<_> = refused.iter().take(5).collect();
        return Err(format!(
            "Marketo refused calls over its limits ({} refusals, {injected} injected): {shown:?}",
            refused.len()
        ));
    }
    let limits = &world.limits;
    let max = world.marketo.max_calls_in_any_window();
    if max > limits.calls_per_window {
        return Err(format!(
            "{max} Marketo calls in one {:?} window (limit {})",
            limits.window, limits.calls_per_window
        ));
    }
    let conc = world.marketo.max_concurrent_seen();
    if conc > limits.max_concurrent {
        return Err(format!("{conc} Marketo calls in flight at once (limit {})", limits.max_concurrent));
    }
    let sf_limit = world.salesforce.config().daily_api_limit;
    let used = world.salesforce.api_usage();
    if used > sf_limit {
        return Err(format!("Salesforce daily API limit exceeded: {used} calls for {sf_limit}"));
    }
    Ok(())
}

/// Asserts [`check_rate_limits`].
pub fn assert_rate_limits_kept(world: &World) {
    if let Err(e) = check_rate_limits(world) {
        panic!("{e}");
    }
}
