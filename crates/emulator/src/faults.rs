//! Fault injection shared by both emulators.
//!
//! A [`FaultPlan`] is a list of rules; each counted API call asks the plan whether a fault fires.
//! The protocol-specific error to answer with is the type parameter `E` (a Marketo error code, a
//! Salesforce error), so each emulator renders it in its own wire format.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// When a rule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// On exactly the Nth matching call (1-based).
    Nth(u64),
    /// On every matching call from the Nth on (1-based), `count` times.
    FromNth {
        /// First call that fails.
        n: u64,
        /// How many consecutive calls fail.
        count: u64,
    },
    /// On a seeded pseudo-random fraction of matching calls (0.0..=1.0).
    Ratio(f64),
    /// On every matching call.
    Always,
}

/// What happens when a rule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction<E> {
    /// Answer with this protocol error instead of doing the work.
    Error(E),
    /// Close the connection without a complete response, before doing the work.
    DropConnection,
    /// Delay the response by this long (the work is still done).
    Delay(Duration),
    /// Answer with a syntactically broken body instead of doing the work.
    MalformedBody,
    /// Do the work (a write is applied), then drop the connection so the caller never sees the result.
    ApplyThenDrop,
}

/// One rule: which calls it matches, when it fires, what it does.
#[derive(Debug, Clone)]
pub struct FaultRule<E> {
    /// Only calls whose path contains this substring match; `None` matches every counted call.
    pub path_contains: Option<String>,
    /// Only calls with this HTTP method match (e.g. "POST"); `None` matches any.
    pub method: Option<String>,
    /// When it fires.
    pub trigger: Trigger,
    /// What it does.
    pub action: FaultAction<E>,
}

impl<E> FaultRule<E> {
    /// A rule matching every call.
    pub fn new(trigger: Trigger, action: FaultAction<E>) -> Self {
        Self { path_contains: None, method: None, trigger, action }
    }

    /// Restricts the rule to paths containing `fragment`.
    pub fn on_path(mut self, fragment: impl Into<String>) -> Self {
        self.path_contains = Some(fragment.into());
        self
    }

    /// Restricts the rule to one HTTP method.
    pub fn on_method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into().to_ascii_uppercase());
        self
    }
}

#[derive(Debug)]
struct PlanState {
    matched: Vec<u64>,
    /// Per rule: how often its action was the one applied.
    applied: Vec<u64>,
    rng: SmallRng,
}

/// A set of fault rules with their counters. Thread-safe; cheap to consult.
#[derive(Debug)]
pub struct FaultPlan<E> {
    rules: Vec<FaultRule<E>>,
    state: Mutex<PlanState>,
}

impl<E: Clone> Default for FaultPlan<E> {
    fn default() -> Self {
        Self::new(Vec::new(), 0)
    }
}

impl<E: Clone> FaultPlan<E> {
    /// A plan from rules; `seed` drives [`Trigger::Ratio`] deterministically.
    pub fn new(rules: Vec<FaultRule<E>>, seed: u64) -> Self {
        let n = rules.len();
        Self {
            rules,
            state: Mutex::new(PlanState {
                matched: vec![0; n],
                applied: vec![0; n],
                rng: SmallRng::seed_from_u64(seed),
            }),
        }
    }

    /// True when the plan has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Per rule (in order), how many calls it was applied to so far (a call that several rules
    /// fire on counts for the first). Counted when the plan is consulted, so a delayed call that
    /// the client abandoned is counted too.
    pub fn applied(&self) -> Vec<u64> {
        match self.state.lock() {
            Ok(g) => g.applied.clone(),
            Err(p) => p.into_inner().applied.clone(),
        }
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[FaultRule<E>] {
        &self.rules
    }

    /// Consults the plan for one call; returns the first rule's action that fires.
    pub fn check(&self, method: &str, path: &str) -> Option<FaultAction<E>> {
        if self.rules.is_empty() {
            return None;
        }
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut fired = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.path_contains.as_deref().is_some_and(|f| !path.contains(f)) {
                continue;
            }
            if rule.method.as_deref().is_some_and(|m| !m.eq_ignore_ascii_case(method)) {
                continue;
            }
            st.matched[i] += 1;
            let k = st.matched[i];
            let fires = match rule.trigger {
                Trigger::Nth(n) => k == n,
                Trigger::FromNth { n, count } => k >= n && k < n.saturating_add(count),
                Trigger::Ratio(r) => st.rng.gen_bool(r.clamp(0.0, 1.0)),
                Trigger::Always => true,
            };
            if fires && fired.is_none() {
                st.applied[i] += 1;
                fired = Some(rule.action.clone());
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_fires_once_on_matching_path_only() {
        let plan = FaultPlan::new(vec![FaultRule::new(Trigger::Nth(2), FaultAction::Error(7u16)).on_path("/leads")], 1);
        assert_eq!(plan.check("GET", "/identity"), None);
        assert_eq!(plan.check("GET", "/rest/v1/leads.json"), None);
        assert_eq!(plan.check("GET", "/rest/v1/leads.json"), Some(FaultAction::Error(7)));
        assert_eq!(plan.check("GET", "/rest/v1/leads.json"), None);
        assert_eq!(plan.applied(), vec![1]);
    }

    #[test]
    fn ratio_is_deterministic_for_a_seed() {
        let run = || {
            let plan =
                FaultPlan::new(vec![FaultRule::new(Trigger::Ratio(0.3), FaultAction::<u16>::DropConnection)], 42);
            (0..200).map(|_| plan.check("GET", "/x").is_some()).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|b| **b).count();
        assert!((30..90).contains(&hits), "{hits} hits of 200 at ratio 0.3");
    }

    #[test]
    fn from_nth_fires_a_burst() {
        let plan = FaultPlan::new(
            vec![FaultRule::new(Trigger::FromNth { n: 2, count: 3 }, FaultAction::Error(1u8)).on_method("post")],
            0,
        );
        let got: Vec<bool> = (0..6).map(|_| plan.check("POST", "/a").is_some()).collect();
        assert_eq!(got, vec![false, true, true, true, false, false]);
        assert_eq!(plan.check("GET", "/a"), None);
    }
}
