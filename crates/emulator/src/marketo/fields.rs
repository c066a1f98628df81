//! The lead field catalogue (what `describe.json` / `describe2.json` report and what reads accept).

use serde_json::{Value, json};

use super::envelope::Reply;

/// One lead field.
#[derive(Debug, Clone)]
pub(crate) struct FieldDef {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) display: String,
    pub(crate) data_type: String,
    pub(crate) length: Option<u32>,
    pub(crate) updateable: bool,
    pub(crate) crm_managed: bool,
    pub(crate) searchable: bool,
    /// What `leads/schema/fields` reports beyond describe (and what field create/update set).
    pub(crate) meta: FieldMeta,
}

/// The schema-only attributes of a lead field.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldMeta {
    pub(crate) description: String,
    pub(crate) hidden: bool,
    pub(crate) html_encoding: bool,
    pub(crate) sensitive: bool,
    pub(crate) custom: bool,
    pub(crate) api_created: bool,
}

#[allow(clippy::too_many_arguments)]
fn f(
    id: i64,
    name: &'static str,
    display: &'static str,
    data_type: &'static str,
    length: Option<u32>,
    updateable: bool,
    crm_managed: bool,
    searchable: bool,
) -> FieldDef {
    FieldDef {
        id,
        name: name.to_string(),
        display: display.to_string(),
        data_type: data_type.to_string(),
        length,
        updateable,
        crm_managed,
        searchable,
        meta: FieldMeta { html_encoding: true, ..FieldMeta::default() },
    }
}

/// Builds the catalogue for a configuration.
pub(crate) fn catalogue(linkedin: bool, oppty: bool) -> Vec<FieldDef> {
    let mut v = vec![
        f(1, "id", "Id", "integer", None, false, false, true),
        f(2, "email", "Email Address", "email", Some(255), true, false, true),
        f(3, "firstName", "First Name", "string", Some(255), true, false, false),
        f(4, "lastName", "Last Name", "string", Some(255), true, false, false),
        f(5, "company", "Company Name", "string", Some(255), true, false, false),
        f(6, "title", "Job Title", "string", Some(255), true, false, false),
        f(7, "phone", "Phone Number", "phone", Some(255), true, false, false),
        f(8, "mobilePhone", "Mobile Phone Number", "phone", Some(255), true, false, false),
        f(9, "leadSource", "Person Source", "string", Some(255), true, false, false),
        f(10, "createdAt", "Created At", "datetime", None, false, false, false),
        f(11, "updatedAt", "Updated At", "datetime", None, false, false, false),
        f(12, "unsubscribed", "Unsubscribed", "boolean", None, true, false, false),
        f(13, "unsubscribedReason", "Unsubscribed Reason", "text", Some(65535), true, false, false),
        f(14, "emailInvalid", "Email Invalid", "boolean", None, true, false, false),
        f(15, "marketingSuspended", "Marketing Suspended", "boolean", None, true, false, false),
        f(16, "doNotCall", "Do Not Call", "boolean", None, true, false, false),
        f(17, "leadStatus", "Lead Status", "string", Some(255), true, false, false),
        f(18, "leadScore", "Lead Score", "integer", None, true, false, false),
        f(19, "personType", "Person Type", "string", Some(255), false, false, false),
        f(20, "city", "City", "string", Some(255), true, false, false),
        f(21, "country", "Country", "string", Some(255), true, false, false),
        f(22, "website", "Website", "url", Some(255), true, false, false),
        f(23, "industry", "Industry", "string", Some(255), true, false, false),
        f(24, "externalSalesPersonId", "External Sales Person Id", "string", Some(255), true, false, false),
        f(25, "leadPartitionId", "Lead Partition Id", "integer", None, false, false, true),
        f(40, "sfdcType", "SFDC Type", "string", Some(255), false, true, false),
        f(41, "sfdcLeadId", "SFDC Lead ID", "string", Some(18), false, true, true),
        f(42, "sfdcContactId", "SFDC Contact ID", "string", Some(18), false, true, true),
        f(43, "sfdcAccountId", "SFDC Account ID", "string", Some(18), false, true, true),
        f(44, "sfdcLeadOwnerId", "SFDC Lead Owner ID", "string", Some(18), false, true, true),
        f(45, "sfdcId", "SFDC Id", "string", Some(18), false, true, false),
    ];
    if linkedin {
        v.push(f(30, "linkedInProfileURL", "LinkedIn Profile URL", "url", Some(255), true, false, false));
    }
    if oppty {
        v.push(f(46, "sfdcOpptyId", "SFDC Oppty ID", "string", Some(18), false, true, true));
    }
    v
}

/// Fields usable as `filterType` (describe2 `searchableFields`, plus the documented filter-only ones).
pub(crate) fn is_filter_type(cat: &[FieldDef], name: &str) -> bool {
    name == "sfdcOpptyId" || cat.iter().any(|f| f.searchable && f.name == name)
}

/// The searchable-field list for describe2.
pub(crate) fn searchable(cat: &[FieldDef]) -> Vec<Value> {
    let mut v: Vec<Value> = cat.iter().filter(|f| f.searchable).map(|f| json!([f.name])).collect();
    if !cat.iter().any(|f| f.name == "sfdcOpptyId") {
        v.push(json!(["sfdcOpptyId"]));
    }
    v
}

/// describe.json entry.
pub(crate) fn describe_v1(f: &FieldDef) -> Value {
    let mut v = json!({
        "id": f.id,
        "displayName": f.display,
        "dataType": f.data_type,
        "rest": {"name": f.name, "readOnly": !f.updateable},
        "soap": {"name": soap_name(&f.name), "readOnly": !f.updateable},
    });
    if let (Some(len), Some(o)) = (f.length, v.as_object_mut()) {
        o.insert("length".into(), json!(len));
    }
    v
}

/// describe2.json field entry.
pub(crate) fn describe_v2(f: &FieldDef) -> Value {
    let mut v = json!({
        "name": f.name,
        "displayName": f.display,
        "dataType": f.data_type,
        "updateable": f.updateable,
        "crmManaged": f.crm_managed,
    });
    if let (Some(len), Some(o)) = (f.length, v.as_object_mut()) {
        o.insert("length".into(), json!(len));
    }
    v
}

fn soap_name(rest: &str) -> String {
    let mut c = rest.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Fields returned when `fields` is omitted.
pub(crate) const DEFAULT_FIELDS: [&str; 6] = ["id", "email", "updatedAt", "createdAt", "firstName", "lastName"];

/// Parses and validates a `fields` list (1006 for unknown fields).
pub(crate) fn requested_fields(cat: &[FieldDef], raw: Option<&str>) -> Result<Vec<String>, Reply> {
    let list: Vec<String> = match raw {
        None => DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect(),
        Some(r) => r.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
    };
    for f in &list {
        if !cat.iter().any(|d| d.name == *f) {
            return Err(Reply::err("1006", format!("Field '{f}' not found")));
        }
    }
    Ok(list)
}
