//! Found by the soak run (examples/soak.rs): a DELETE answered 200 with a broken body did no work,
//! yet `delete_task` reported success, so a deleted reminder's Task stayed open in Salesforce.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use salesync_core::ports::salesforce::SalesforceApi;
use salesync_core::{Error, sfid::SalesforceId};
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use serde_json::json;

#[tokio::test]
async fn a_delete_answered_with_a_body_is_not_a_success() {
    let (emu, c) = setup().await;
    let lead = lead(&emu, "soak@example.com");
    let task = emu.insert("Task", obj(json!({"Subject": "Call back", "WhoId": lead}))).unwrap();
    let id = SalesforceId::parse(&task).unwrap();
    let live = |emu: &salesync_emulator::salesforce::SalesforceEmulator| {
        emu.records("Task").iter().any(|t| t["Id"] == json!(task))
    };

    // The first DELETE gets a 200 with a cut-off JSON body and is not carried out.
    emu.set_faults(FaultPlan::new(
        vec![FaultRule::new(Trigger::Nth(1), FaultAction::MalformedBody).on_method("DELETE")],
        1,
    ));
    let first = c.delete_task(&id).await;
    assert!(matches!(first, Err(Error::Protocol { .. })), "{first:?}");
    assert!(live(&emu), "the Task is still there, so success must not be reported");

    // The retry deletes it; a repeat after that still counts as done.
    c.delete_task(&id).await.unwrap();
    assert!(!live(&emu));
    c.delete_task(&id).await.unwrap();
}
