//! Several processes provisioning the custom activity types of one instance at once (each
//! dispatcher does so before its first delivery; replicas start together): whoever loses a race
//! (a type or attribute another process created first, a draft it approved first) must look again
//! and find the other's work, not fail (a failed provisioning holds Marketo delivery back for a
//! cool-down).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;

use salesync_core::outbound::custom_activity_types;
use salesync_core::ports::marketo::MarketoApi;
use salesync_emulator::marketo::MarketoConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_provisioning_by_several_processes_succeeds_everywhere_with_one_set_of_types() {
    for round in 0..5 {
        let emu = common::start(MarketoConfig::default()).await;
        // Separate clients: separate tokens and caches, as in separate processes.
        let clients: Vec<_> = (0..4).map(|_| common::client(&emu)).collect();
        let defs = custom_activity_types();
        let results = futures::future::join_all(clients.iter().map(|c| c.ensure_custom_activity_types(&defs))).await;
        let mut ids: Vec<BTreeMap<String, i64>> = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            let provisioned = r.unwrap_or_else(|e| panic!("round {round}: client {i} failed: {e}"));
            ids.push(provisioned.into_iter().map(|p| (p.api_name, p.id)).collect());
        }
        assert_eq!(ids[0].len(), defs.len());
        assert!(ids.iter().all(|m| m == &ids[0]), "round {round}: clients disagree on type ids: {ids:?}");
        // Every type is approved with all its attributes, once.
        let again = common::client(&emu).ensure_custom_activity_types(&defs).await.unwrap();
        assert!(again.iter().all(|p| !p.created && ids[0][&p.api_name] == p.id));
    }
}
