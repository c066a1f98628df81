//! The emulated objects and their fields.

use super::config::SalesforceConfig;

/// Field data type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FType {
    /// The record id.
    Id,
    /// A reference to one of these sObject types (polymorphic when several).
    Ref(&'static [&'static str]),
    /// Text with a maximum length.
    Str(usize),
    /// An email address (80 chars).
    Email,
    /// Boolean.
    Bool,
    /// Integer.
    Int,
    /// Number.
    Num,
    /// Date (`YYYY-MM-DD`).
    Date,
    /// Datetime.
    DateTime,
    /// Restricted picklist.
    Pick(Vec<String>),
    /// Custom field of unknown type: any JSON scalar.
    Any,
}

impl FType {
    /// String-valued (text, ids, picklists).
    pub(crate) fn is_text(&self) -> bool {
        matches!(self, FType::Id | FType::Ref(_) | FType::Str(_) | FType::Email | FType::Pick(_))
    }

    /// The describe `type` name.
    pub(crate) fn describe_name(&self) -> &'static str {
        match self {
            FType::Id => "id",
            FType::Ref(_) => "reference",
            FType::Str(n) if *n > 255 => "textarea",
            FType::Str(_) | FType::Any => "string",
            FType::Email => "email",
            FType::Bool => "boolean",
            FType::Int => "int",
            FType::Num => "double",
            FType::Date => "date",
            FType::DateTime => "datetime",
            FType::Pick(_) => "picklist",
        }
    }
}

/// Who may write a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Create and update.
    Write,
    /// Create only (e.g. Task.TaskSubtype).
    CreateOnly,
    /// System / derived.
    ReadOnly,
}

/// One field.
#[derive(Debug, Clone)]
pub(crate) struct FieldDef {
    pub(crate) name: String,
    pub(crate) ty: FType,
    pub(crate) access: Access,
    pub(crate) required: bool,
    /// Relationship name for references (`OwnerId` → `Owner`).
    pub(crate) rel: Option<String>,
    pub(crate) external_id: bool,
    pub(crate) unique: bool,
    pub(crate) custom: bool,
}

/// One parent-to-child relationship (`Lead.Tasks`).
#[derive(Debug, Clone)]
pub(crate) struct ChildRel {
    pub(crate) name: &'static str,
    pub(crate) child: &'static str,
    pub(crate) field: &'static str,
}

/// One sObject type.
#[derive(Debug, Clone)]
pub(crate) struct ObjDef {
    pub(crate) name: &'static str,
    pub(crate) prefix: &'static str,
    pub(crate) fields: Vec<FieldDef>,
    pub(crate) children: Vec<ChildRel>,
    /// Whether the type supports soft delete (IsDeleted).
    pub(crate) deletable: bool,
}

impl ObjDef {
    /// A field by case-insensitive name.
    pub(crate) fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// A reference field by case-insensitive relationship name.
    pub(crate) fn rel(&self, rel: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.rel.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(rel)))
    }

    /// A child relationship by case-insensitive name.
    pub(crate) fn child(&self, name: &str) -> Option<&ChildRel> {
        self.children.iter().find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// All emulated types.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    pub(crate) objects: Vec<ObjDef>,
}

/// Task.Status values; `Completed` is the only closed one.
pub(crate) const TASK_STATUS: &[&str] =
    &["Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"];
/// Task.Priority values.
pub(crate) const TASK_PRIORITY: &[&str] = &["High", "Normal", "Low"];
/// Task.TaskSubtype values.
pub(crate) const TASK_SUBTYPE: &[&str] = &["Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"];
/// Task.CallType values.
pub(crate) const CALL_TYPE: &[&str] = &["Internal", "Inbound", "Outbound"];

struct B {
    fields: Vec<FieldDef>,
}

impl B {
    fn new() -> Self {
        B { fields: Vec::new() }
    }
    fn add(mut self, name: &str, ty: FType, access: Access, required: bool) -> Self {
        let rel = match (&ty, name.strip_suffix("Id")) {
            (FType::Ref(_), Some(r)) => Some(r.to_string()),
            _ => None,
        };
        self.fields.push(FieldDef {
            name: name.to_string(),
            ty,
            access,
            required,
            rel,
            external_id: false,
            unique: false,
            custom: name.ends_with("__c"),
        });
        self
    }
    fn w(self, name: &str, ty: FType) -> Self {
        self.add(name, ty, Access::Write, false)
    }
    fn req(self, name: &str, ty: FType) -> Self {
        self.add(name, ty, Access::Write, true)
    }
    fn ro(self, name: &str, ty: FType) -> Self {
        self.add(name, ty, Access::ReadOnly, false)
    }
    fn audit(self, deletable: bool) -> Self {
        let b = self
            .ro("CreatedDate", FType::DateTime)
            .ro("CreatedById", FType::Ref(&["User"]))
            .ro("LastModifiedDate", FType::DateTime)
            .ro("LastModifiedById", FType::Ref(&["User"]))
            .ro("SystemModstamp", FType::DateTime);
        if deletable { b.ro("IsDeleted", FType::Bool) } else { b }
    }
    fn obj(self, name: &'static str, prefix: &'static str, deletable: bool, children: Vec<ChildRel>) -> ObjDef {
        ObjDef { name, prefix, fields: self.fields, children, deletable }
    }
}

fn pick(v: &[&str]) -> FType {
    FType::Pick(v.iter().map(|s| s.to_string()).collect())
}

const USER: &[&str] = &["User"];
const OWNER_LEAD: &[&str] = &["User", "Group"];
const WHO: &[&str] = &["Lead", "Contact"];
const WHAT: &[&str] = &["Account", "Opportunity"];

impl Schema {
    /// Builds the schema, adding the configured custom fields.
    pub(crate) fn new(cfg: &SalesforceConfig) -> Self {
        let child = |name, child, field| ChildRel { name, child, field };
        let user = B::new()
            .ro("Id", FType::Id)
            .w("Username", FType::Str(80))
            .w("FirstName", FType::Str(40))
            .req("LastName", FType::Str(80))
            .ro("Name", FType::Str(121))
            .w("Email", FType::Email)
            .w("IsActive", FType::Bool)
            .w("Title", FType::Str(80))
            .audit(false)
            .obj("User", "005", false, vec![]);
        let group = B::new()
            .ro("Id", FType::Id)
            .req("Name", FType::Str(40))
            .w("DeveloperName", FType::Str(80))
            .w("Type", pick(&["Queue", "Regular"]))
            .w("Email", FType::Email)
            .audit(false)
            .obj("Group", "00G", false, vec![]);
        let account = B::new()
            .ro("Id", FType::Id)
            .req("Name", FType::Str(255))
            .w("OwnerId", FType::Ref(USER))
            .w("Website", FType::Str(255))
            .w("Industry", FType::Str(255))
            .w("Phone", FType::Str(40))
            .audit(true)
            .obj(
                "Account",
                "001",
                true,
                vec![
                    child("Contacts", "Contact", "AccountId"),
                    child("Opportunities", "Opportunity", "AccountId"),
                    child("Tasks", "Task", "WhatId"),
                ],
            );
        let contact = B::new()
            .ro("Id", FType::Id)
            .w("AccountId", FType::Ref(&["Account"]))
            .w("OwnerId", FType::Ref(USER))
            .w("FirstName", FType::Str(40))
            .req("LastName", FType::Str(80))
            .ro("Name", FType::Str(121))
            .w("Email", FType::Email)
            .w("Title", FType::Str(128))
            .w("Phone", FType::Str(40))
            .w("MobilePhone", FType::Str(40))
            .w("LeadSource", FType::Str(255))
            .w("HasOptedOutOfEmail", FType::Bool)
            .w("DoNotCall", FType::Bool)
            .audit(true)
            .obj(
                "Contact",
                "003",
                true,
                vec![
                    child("Tasks", "Task", "WhoId"),
                    child("OpportunityContactRoles", "OpportunityContactRole", "ContactId"),
                ],
            );
        let lead = B::new()
            .ro("Id", FType::Id)
            .w("FirstName", FType::Str(40))
            .req("LastName", FType::Str(80))
            .ro("Name", FType::Str(121))
            .req("Company", FType::Str(255))
            .w("Email", FType::Email)
            .w("Title", FType::Str(128))
            .w("Phone", FType::Str(40))
            .w("LeadSource", FType::Str(255))
            .req("Status", FType::Str(255))
            .w("OwnerId", FType::Ref(OWNER_LEAD))
            .w("HasOptedOutOfEmail", FType::Bool)
            .w("DoNotCall", FType::Bool)
            .w("EmailBouncedDate", FType::DateTime)
            .w("EmailBouncedReason", FType::Str(255))
            .ro("IsConverted", FType::Bool)
            .ro("ConvertedDate", FType::Date)
            .ro("ConvertedAccountId", FType::Ref(&["Account"]))
            .ro("ConvertedContactId", FType::Ref(&["Contact"]))
            .ro("ConvertedOpportunityId", FType::Ref(&["Opportunity"]))
            .audit(true)
            .obj("Lead", "00Q", true, vec![child("Tasks", "Task", "WhoId")]);
        let opportunity = B::new()
            .ro("Id", FType::Id)
            .w("AccountId", FType::Ref(&["Account"]))
            .w("OwnerId", FType::Ref(USER))
            .req("Name", FType::Str(120))
            .req("StageName", FType::Str(255))
            .req("CloseDate", FType::Date)
            .w("Amount", FType::Num)
            .ro("IsClosed", FType::Bool)
            .ro("IsWon", FType::Bool)
            .audit(true)
            .obj(
                "Opportunity",
                "006",
                true,
                vec![
                    child("OpportunityContactRoles", "OpportunityContactRole", "OpportunityId"),
                    child("Tasks", "Task", "WhatId"),
                ],
            );
        let ocr = B::new()
            .ro("Id", FType::Id)
            .req("OpportunityId", FType::Ref(&["Opportunity"]))
            .req("ContactId", FType::Ref(&["Contact"]))
            .w("Role", FType::Str(255))
            .w("IsPrimary", FType::Bool)
            .audit(true)
            .obj("OpportunityContactRole", "00K", true, vec![]);
        let mut task = B::new()
            .ro("Id", FType::Id)
            .w("Subject", FType::Str(255))
            .req("Status", pick(TASK_STATUS))
            .req("Priority", pick(TASK_PRIORITY))
            .ro("IsHighPriority", FType::Bool)
            .w("WhoId", FType::Ref(WHO))
            .w("WhatId", FType::Ref(WHAT))
            .ro("AccountId", FType::Ref(&["Account"]))
            .req("OwnerId", FType::Ref(USER))
            .w("ActivityDate", FType::Date)
            .w("Description", FType::Str(32_000))
            .add("TaskSubtype", pick(TASK_SUBTYPE), Access::CreateOnly, false)
            .w("Type", FType::Pick(cfg.task_type_values.clone()))
            .w("CallType", pick(CALL_TYPE))
            .w("CallDurationInSeconds", FType::Int)
            .w("CallDisposition", FType::Str(255))
            .w("CallObject", FType::Str(255))
            .w("IsReminderSet", FType::Bool)
            .w("ReminderDateTime", FType::DateTime)
            .ro("IsClosed", FType::Bool)
            .ro("CompletedDateTime", FType::DateTime)
            .ro("IsRecurrence", FType::Bool)
            .ro("IsArchived", FType::Bool)
            .audit(true);
        if !cfg.task_external_id_field.is_empty() {
            task = task.w(&cfg.task_external_id_field, FType::Str(255));
            if let Some(f) = task.fields.last_mut() {
                f.external_id = true;
                f.unique = cfg.task_external_id_unique;
            }
        }
        for f in &cfg.task_custom_fields {
            if task.fields.iter().all(|x| !x.name.eq_ignore_ascii_case(f)) {
                task = task.w(f, FType::Any);
            }
        }
        let mut objects =
            vec![user, group, account, contact, lead, opportunity, ocr, task.obj("Task", "00T", true, vec![])];
        for (sobject, field) in &cfg.custom_fields {
            if let Some(o) = objects.iter_mut().find(|o| o.name.eq_ignore_ascii_case(sobject))
                && o.field(field).is_none()
            {
                let b = B { fields: std::mem::take(&mut o.fields) }.w(field, FType::Any);
                o.fields = b.fields;
            }
        }
        Schema { objects }
    }

    /// A type by case-insensitive name.
    pub(crate) fn obj(&self, name: &str) -> Option<&ObjDef> {
        self.objects.iter().find(|o| o.name.eq_ignore_ascii_case(name))
    }

    /// The type owning an id's key prefix.
    pub(crate) fn by_prefix(&self, id: &str) -> Option<&ObjDef> {
        let p = id.get(..3)?;
        self.objects.iter().find(|o| o.prefix == p)
    }
}
