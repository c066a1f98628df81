//! Fault-plan presets: single rules and the sets the chaos scenarios and the soak run inject.

use std::time::Duration;

use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::marketo::MarketoFault;
use salesync_emulator::salesforce::SalesforceFault;

use crate::world::World;

/// Salesforce's data API (every call but the login).
pub const SALESFORCE_DATA: &str = "/services/data";

/// Marketo answers `code` to a `ratio` of the counted calls.
pub fn marketo_code(code: &str, ratio: f64) -> FaultRule<MarketoFault> {
    FaultRule::new(Trigger::Ratio(ratio), FaultAction::Error(MarketoFault::code(code)))
}

/// Salesforce answers `fault` to a `ratio` of the data API calls.
pub fn salesforce_error(fault: SalesforceFault, ratio: f64) -> FaultRule<SalesforceFault> {
    FaultRule::new(Trigger::Ratio(ratio), FaultAction::Error(fault)).on_path(SALESFORCE_DATA)
}

/// The retryable Marketo error codes (502, 604, 608, 611, 713), each at `ratio`.
pub fn marketo_errors(ratio: f64) -> Vec<FaultRule<MarketoFault>> {
    ["502", "604", "608", "611", "713"].into_iter().map(|c| marketo_code(c, ratio)).collect()
}

/// Salesforce 503 SERVER_UNAVAILABLE and UNABLE_TO_LOCK_ROW, each at `ratio`.
pub fn salesforce_errors(ratio: f64) -> Vec<FaultRule<SalesforceFault>> {
    vec![
        salesforce_error(SalesforceFault::ServerUnavailable, ratio),
        salesforce_error(SalesforceFault::UnableToLockRow, ratio),
    ]
}

/// Marketo transport faults: custom activity writes applied with the response lost (the second
/// always, then 10%; first in the plan, so no other rule pre-empts them), dropped connections,
/// answers slower than `slow`, any write applied then dropped, unreadable answers to writes; each
/// random one at `ratio`.
pub fn marketo_transport(ratio: f64, slow: Duration) -> Vec<FaultRule<MarketoFault>> {
    let write = || FaultRule::new(Trigger::Nth(2), FaultAction::ApplyThenDrop).on_path("/activities/external.json");
    vec![
        write(),
        FaultRule { trigger: Trigger::Ratio(0.10), ..write() },
        FaultRule::new(Trigger::Ratio(ratio), FaultAction::DropConnection),
        FaultRule::new(Trigger::Ratio(ratio), FaultAction::Delay(slow)),
        FaultRule::new(Trigger::Ratio(ratio), FaultAction::ApplyThenDrop),
        // Unreadable answers to writes (the engine's reads end the pass on one, by design).
        FaultRule::new(Trigger::Ratio(ratio), FaultAction::MalformedBody).on_path("/activities/external.json"),
    ]
}

/// Salesforce transport faults: Task upserts and opt-out updates applied with the response lost
/// (the second always, then 10%; first in the plan), dropped connections, answers slower than
/// `slow`, unreadable answers to Task upserts; each random one at `ratio`.
pub fn salesforce_transport(ratio: f64, slow: Duration) -> Vec<FaultRule<SalesforceFault>> {
    let lost =
        |path: &str, trigger| FaultRule::new(trigger, FaultAction::ApplyThenDrop).on_path(path).on_method("PATCH");
    vec![
        lost("/composite/sobjects", Trigger::Nth(2)),
        lost("/composite/sobjects", Trigger::Ratio(0.10)),
        lost("/sobjects/", Trigger::Nth(2)),
        lost("/sobjects/", Trigger::Ratio(0.10)),
        FaultRule::new(Trigger::Ratio(ratio), FaultAction::DropConnection).on_path(SALESFORCE_DATA),
        FaultRule::new(Trigger::Ratio(ratio), FaultAction::Delay(slow)).on_path(SALESFORCE_DATA),
        FaultRule::new(Trigger::Ratio(ratio), FaultAction::MalformedBody)
            .on_path("/composite/sobjects")
            .on_method("PATCH"),
    ]
}

/// The rules, each random one preceded by a copy that fires once, early (on a different call for
/// each), so that every kind of fault surely happens at least once whatever the interleaving.
pub fn surely<E: Clone>(rules: &[FaultRule<E>]) -> Vec<FaultRule<E>> {
    let once = rules
        .iter()
        .filter(|r| matches!(r.trigger, Trigger::Ratio(_)))
        .enumerate()
        .map(|(i, r)| FaultRule { trigger: Trigger::Nth(3 + 2 * i as u64), ..r.clone() });
    once.chain(rules.iter().cloned()).collect()
}

/// Sets both emulators' fault plans.
pub fn set_faults(
    world: &World,
    marketo: Vec<FaultRule<MarketoFault>>,
    marketo_seed: u64,
    salesforce: Vec<FaultRule<SalesforceFault>>,
    salesforce_seed: u64,
) {
    world.marketo.set_faults(FaultPlan::new(marketo, marketo_seed));
    world.salesforce.set_faults(FaultPlan::new(salesforce, salesforce_seed));
}

/// Clears both emulators' fault plans.
pub fn clear_faults(world: &World) {
    world.marketo.set_faults(FaultPlan::default());
    world.salesforce.set_faults(FaultPlan::default());
}
