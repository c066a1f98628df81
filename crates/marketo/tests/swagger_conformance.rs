//! Every request the connector issues (method + path, and required query parameters) exists in
//! Adobe's Swagger definitions kept in `shared/reference/openapi/` (read at test time, never copied).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use chrono::{DurationRound, TimeDelta};
use futures::TryStreamExt;
use salesync_core::ports::marketo::{CustomActivityTypeDef, ExportFilter, ExportState, MarketoApi, NewCustomActivity};
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::marketo::{MarketoConfig, MarketoFault};
use salesync_emulator::seed;
use serde_json::Value;

struct Op {
    template: Vec<String>,
    method: String,
    required_query: Vec<String>,
}

fn load_ops() -> Vec<Op> {
    // The Swagger files are read in place (Adobe's licence: reference them, don't vendor them):
    // `SALESYNC_SWAGGER_DIR`, else `shared/reference/openapi` beside the checkout, else the
    // workplace's `/work/shared/reference/openapi`. None found is a failure, never a skip.
    let candidates = [
        std::env::var_os("SALESYNC_SWAGGER_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/openapi")),
        Some(PathBuf::from("/work/shared/reference/openapi")),
    ];
    let dir = candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("marketo-mapi.swagger.json").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/openapi"));
    let mut ops = Vec::new();
    for file in ["marketo-mapi.swagger.json", "marketo-identity.swagger.json"] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}); set SALESYNC_SWAGGER_DIR to the folder holding marketo-mapi.swagger.json and marketo-identity.swagger.json",
                path.display()
            )
        });
        let doc: Value = serde_json::from_str(&text).unwrap();
        for (p, methods) in doc["paths"].as_object().unwrap() {
            for (m, op) in methods.as_object().unwrap() {
                let required_query = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|x| x["in"] == "query" && x["required"] == true)
                            .filter_map(|x| x["name"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                ops.push(Op {
                    template: p.trim_matches('/').split('/').map(String::from).collect(),
                    method: m.to_ascii_uppercase(),
                    required_query,
                });
            }
        }
    }
    ops
}

/// A concrete path segment matches a template segment; `{x}` matches any non-empty run of
/// characters, with the template's literal prefix and suffix (e.g. `{leadId}.json`).
fn segment_matches(template: &str, segment: &str) -> bool {
    match (template.find('{'), template.find('}')) {
        (Some(a), Some(b)) if a < b => {
            let (pre, post) = (&template[..a], &template[b + 1..]);
            segment.len() > pre.len() + post.len() && segment.starts_with(pre) && segment.ends_with(post)
        }
        _ => template == segment,
    }
}

fn find<'a>(ops: &'a [Op], method: &str, path: &str) -> Option<&'a Op> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Prefer a literal match over a templated one (`external/types.json` vs `external/type/{apiName}…`).
    let mut candidates: Vec<&Op> = ops
        .iter()
        .filter(|o| {
            o.method == method
                && o.template.len() == segs.len()
                && o.template.iter().zip(&segs).all(|(t, s)| segment_matches(t, s))
        })
        .collect();
    candidates.sort_by_key(|o| o.template.iter().filter(|t| t.contains('{')).count());
    candidates.into_iter().next()
}

#[tokio::test]
async fn every_request_is_in_the_swagger() {
    let ops = load_ops();
    let emu =
        common::start(MarketoConfig { bulk_processing_time: TimeDelta::minutes(5), ..common::manual_config() }).await;
    let world = seed::generate(40, 21);
    emu.seed_world(&world);
    let sniffer = common::sniff(emu.addr()).await;
    let c = common::builder_for(&emu, &sniffer.base_url()).build().unwrap();

    // Exercise every operation.
    let schema = c.lead_schema().await.unwrap();
    let fields: Vec<String> =
        salesync_core::mapping::requested_fields(|f| schema.has(f)).into_iter().map(String::from).collect();
    let ids: Vec<i64> = world.people.iter().take(5).map(|p| p.marketo_id).collect();
    c.leads_by_ids(&ids, &fields).await.unwrap();
    let emails: Vec<String> = world.people.iter().filter_map(|p| p.email.clone()).take(3).collect();
    c.leads_by_filter("email", &emails, &fields, None).await.unwrap();
    c.lead_unsubscribed(ids[0]).await.unwrap();
    c.usage_today().await.unwrap();
    let token = c.paging_token(common::t0() - TimeDelta::days(1)).await.unwrap();
    c.lead_changes(&token, &fields).await.unwrap();
    c.deleted_leads(&token).await.unwrap();
    c.activities(&token, &[12, 13], &ids).await.unwrap();
    c.activity_types().await.unwrap();
    let def = CustomActivityTypeDef {
        api_name: "salesyncLogCall".into(),
        name: "Log Call (salesync)".into(),
        description: "A call".into(),
        trigger_name: "Had Call - salesync".into(),
        filter_name: "Was Call - salesync".into(),
        primary_attribute: ("subject".into(), "Subject".into()),
        attributes: vec![("outboxId".into(), "Outbox Id".into(), "string".into())],
    };
    let t = c.ensure_custom_activity_types(std::slice::from_ref(&def)).await.unwrap();
    c.ensure_custom_activity_types(&[def]).await.unwrap();
    c.add_custom_activities(&[NewCustomActivity {
        lead_id: ids[0],
        activity_date: common::t0(),
        activity_type_id: t[0].id,
        primary_attribute_value: "Call".into(),
        attributes: vec![("outboxId".into(), "ob-1".into())],
    }])
    .await
    .unwrap();
    let start = world.people.iter().map(|p| p.created_at).min().unwrap().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let filter = ExportFilter::CreatedAt { start, end: start + TimeDelta::days(31) };
    let job = c.start_lead_export(&fields, filter.clone()).await.unwrap();
    let mut st = c.lead_export_status(&job.id).await.unwrap();
    while st.state != ExportState::Completed {
        emu.clock().advance(TimeDelta::minutes(1));
        st = c.lead_export_status(&job.id).await.unwrap();
    }
    c.lead_export_file(&job.id, 0).await.unwrap().try_collect::<Vec<_>>().await.unwrap();
    c.lead_export_file(&job.id, 10).await.unwrap().try_collect::<Vec<_>>().await.unwrap();
    let job2 = c.start_lead_export(&fields, filter).await.unwrap();
    c.cancel_lead_export(&job2.id).await.unwrap();
    // The describe.json fallback.
    emu.set_faults(FaultPlan::new(
        vec![FaultRule::new(Trigger::Always, FaultAction::Error(MarketoFault::code("610"))).on_path("describe2")],
        0,
    ));
    let legacy = c.lead_schema().await.unwrap();
    assert!(legacy.has("email"));

    // 1. Method + path of every call the emulator saw.
    let mut seen = BTreeSet::new();
    for call in emu.call_log() {
        assert!(
            find(&ops, &call.method, &call.path).is_some(),
            "{} {} is not in the Swagger definitions",
            call.method,
            call.path
        );
        seen.insert(format!("{} {}", call.method, call.path));
    }
    for must in [
        "GET /identity/oauth/token",
        "GET /rest/v1/leads/describe2.json",
        "GET /rest/v1/leads/describe.json",
        "GET /rest/v1/leads.json",
        "GET /rest/v1/activities/pagingtoken.json",
        "GET /rest/v1/activities/leadchanges.json",
        "GET /rest/v1/activities/deletedleads.json",
        "GET /rest/v1/activities.json",
        "GET /rest/v1/activities/types.json",
        "GET /rest/v1/activities/external/types.json",
        "POST /rest/v1/activities/external/type.json",
        "POST /rest/v1/activities/external.json",
        "POST /bulk/v1/leads/export/create.json",
    ] {
        assert!(seen.contains(must), "{must} was not exercised: {seen:#?}");
    }

    // 2. Required query parameters on the wire, and no token in any query.
    let wire = sniffer.requests();
    assert!(
        wire.len() >= emu.call_log().len(),
        "the proxy saw every request: {wire:#?} vs {:#?}",
        emu.call_log().iter().map(|c| format!("{} {}", c.method, c.path)).collect::<Vec<_>>()
    );
    for (method, target) in wire {
        let url = url::Url::parse(&format!("http://x{target}")).unwrap();
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert!(!query.contains_key("access_token"), "token in the query of {method} {}", url.path());
        if query.get("_method").map(String::as_str) == Some("GET") {
            continue;
        }
        let op = find(&ops, &method, url.path()).unwrap_or_else(|| panic!("{method} {} not in Swagger", url.path()));
        for p in &op.required_query {
            assert!(query.contains_key(p), "{method} {} lacks required query parameter {p}", url.path());
        }
    }
    emu.shutdown().await;
}
