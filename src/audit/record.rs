//! Teams audit records (Office 365 Management Activity API `AuditData`, RecordType 25, Workload
//! `MicrosoftTeams`): a typed view over the raw JSON, which is kept whole as evidence.
//!
//! Parsing is tolerant: unknown fields and operations are kept, `Members[].UserObjectId` may be
//! missing, `ParticipantInfo` may be absent, `CreationTime` may have no zone (it is UTC), and
//! `UserKey` may hold the actor or the member depending on the operation.
//!
//! A record is read in one pass over its text: the dozen fields chatwarden interprets are taken
//! as borrowed slices and everything else is skipped (validated, not built), and the text itself
//! is kept byte for byte as the evidence stored in the audit index. A record whose object names
//! a field twice is refused: two readers could otherwise disagree on which value counts.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Operations chatwarden interprets; everything else is `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Someone was added to a team, channel or chat.
    MemberAdded,
    /// Someone was removed.
    MemberRemoved,
    /// A chat was created.
    ChatCreated,
    /// A message was sent.
    MessageSent,
    /// A message with a link was created.
    MessageCreatedHasLink,
    /// A message was edited to contain a link.
    MessageEditedHasLink,
    /// A team was created.
    TeamCreated,
    /// Any other Teams operation (kept as evidence, not interpreted).
    Other(String),
}

impl Operation {
    /// Reads an `Operation` value.
    pub fn parse(text: &str) -> Self {
        match text {
            "MemberAdded" => Self::MemberAdded,
            "MemberRemoved" => Self::MemberRemoved,
            "ChatCreated" => Self::ChatCreated,
            "MessageSent" => Self::MessageSent,
            "MessageCreatedHasLink" => Self::MessageCreatedHasLink,
            "MessageEditedHasLink" => Self::MessageEditedHasLink,
            "TeamCreated" => Self::TeamCreated,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The operation name as Microsoft writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::MemberAdded => "MemberAdded",
            Self::MemberRemoved => "MemberRemoved",
            Self::ChatCreated => "ChatCreated",
            Self::MessageSent => "MessageSent",
            Self::MessageCreatedHasLink => "MessageCreatedHasLink",
            Self::MessageEditedHasLink => "MessageEditedHasLink",
            Self::TeamCreated => "TeamCreated",
            Self::Other(name) => name,
        }
    }
}

/// A member of the chat or team the record is about.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Member {
    /// UPN (sometimes an anonymised token rather than an address).
    #[serde(default, rename = "UPN")]
    pub upn: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Entra object id, when Microsoft includes it.
    #[serde(default)]
    pub user_object_id: Option<String>,
    /// The member's home tenant, when Microsoft includes it.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// 0 member, 1 owner, 2 guest (as Microsoft documents it).
    #[serde(default)]
    pub role: Option<i64>,
}

/// A domain seen in the chat and its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SipDomain {
    /// DNS domain.
    #[serde(default)]
    pub domain_name: String,
    /// Its tenant id.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// Who took part in the chat (`ParticipantInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ParticipantInfo {
    /// Users of another tenant took part.
    pub has_foreign_tenant_users: bool,
    /// Guests took part.
    pub has_guest_users: bool,
    /// Guests of other tenants took part.
    pub has_other_guest_users: bool,
    /// Unauthenticated (anonymous) users took part.
    pub has_unauthenticated_users: bool,
    /// Domains of the participants.
    pub participating_domains: Vec<String>,
    /// Domains with their tenants.
    #[serde(rename = "ParticipatingSIPDomains")]
    pub participating_sip_domains: Vec<SipDomain>,
    /// Tenant ids of the participants.
    pub participating_tenant_ids: Vec<String>,
}

/// One Teams audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Record id (unique; the dedupe key).
    pub id: String,
    /// What happened.
    pub operation: Operation,
    /// Tenant the record belongs to (ours).
    pub organization_id: String,
    /// When, in Unix milliseconds (UTC).
    pub created_at: Option<i64>,
    /// The acting user's UPN (or `Application`).
    pub user_id: Option<String>,
    /// The acting user's (or, for some operations, the member's) object id.
    pub user_key: Option<String>,
    /// The chat.
    pub chat_thread_id: Option<String>,
    /// `OneOnOne`, `GroupChat`, `Team`, ...
    pub communication_type: Option<String>,
    /// Members named by the record.
    pub members: Vec<Member>,
    /// Participants of the chat.
    pub participant_info: Option<ParticipantInfo>,
    /// The record's JSON text exactly as received.
    raw: String,
}

/// Why a JSON value is not a Teams audit record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditParseError {
    /// Not a JSON object.
    #[error("an audit record must be a JSON object")]
    NotAnObject,
    /// A required field is missing or empty.
    #[error("audit record field `{0}` is missing")]
    Missing(&'static str),
    /// Not a Teams record.
    #[error("not a Microsoft Teams audit record (Workload {0})")]
    NotTeams(String),
    /// A field has the wrong type.
    #[error("audit record field `{0}` has the wrong type")]
    WrongType(&'static str),
    /// Not JSON, or an object that names a field twice.
    #[error("audit record is not valid JSON: {0}")]
    Malformed(String),
}

/// The top-level fields chatwarden reads, as slices of the record's text (`None` when absent or
/// `null`); every other field is skipped.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "Id", borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(rename = "Operation", borrow, default)]
    operation: Option<&'a RawValue>,
    #[serde(rename = "OrganizationId", borrow, default)]
    organization_id: Option<&'a RawValue>,
    #[serde(rename = "Workload", borrow, default)]
    workload: Option<&'a RawValue>,
    #[serde(rename = "CreationTime", borrow, default)]
    creation_time: Option<&'a RawValue>,
    #[serde(rename = "UserId", borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "UserKey", borrow, default)]
    user_key: Option<&'a RawValue>,
    #[serde(rename = "ChatThreadId", borrow, default)]
    chat_thread_id: Option<&'a RawValue>,
    #[serde(rename = "CommunicationType", borrow, default)]
    communication_type: Option<&'a RawValue>,
    #[serde(rename = "Members", borrow, default)]
    members: Option<&'a RawValue>,
    #[serde(rename = "ParticipantInfo", borrow, default)]
    participant_info: Option<&'a RawValue>,
}

/// A string field: `None` when absent, `null` or empty; any other type is an error.
fn string_field(raw: Option<&RawValue>, name: &'static str) -> Result<Option<String>, AuditParseError> {
    let Some(raw) = raw else { return Ok(None) };
    let text: String = serde_json::from_str(raw.get()).map_err(|_| AuditParseError::WrongType(name))?;
    Ok(Some(text).filter(|t| !t.is_empty()))
}

/// An object field read into `T`; any other shape is an error (an array too: serde would read
/// a struct from one, field by position).
fn object_field<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>, name: &'static str) -> Result<Option<T>, AuditParseError> {
    let Some(raw) = raw else { return Ok(None) };
    if !raw.get().starts_with('{') {
        return Err(AuditParseError::WrongType(name));
    }
    serde_json::from_str(raw.get()).map(Some).map_err(|_| AuditParseError::WrongType(name))
}

/// An array of objects read into `T`s; any other shape is an error.
fn objects_field<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>, name: &'static str) -> Result<Vec<T>, AuditParseError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|_| AuditParseError::WrongType(name))?;
    let mut values = Vec::with_capacity(items.len());
    for item in items {
        values.extend(object_field(Some(item), name)?);
    }
    Ok(values)
}

/// Parses `CreationTime` (`2020-02-17T16:59:44`, optionally with fraction and zone; no zone = UTC).
pub(crate) fn parse_creation_time(text: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let parsed =
        time::OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| time::OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339).ok())?;
    Some((parsed.unix_timestamp_nanos() / 1_000_000) as i64)
}

impl AuditRecord {
    /// Reads a record from its JSON text (one object), which is kept as the record's evidence.
    pub fn from_json(text: impl Into<String>) -> Result<Self, AuditParseError> {
        let mut raw: String = text.into();
        let trimmed = raw.trim();
        if trimmed.len() != raw.len() {
            raw = trimmed.to_owned();
        }
        // Checked first: serde would also read a struct from an array, field by position.
        if !raw.starts_with('{') {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(&raw) {
                Ok(_) => AuditParseError::NotAnObject,
                Err(err) => AuditParseError::Malformed(err.to_string()),
            });
        }
        let fields: Fields<'_> = serde_json::from_str(&raw).map_err(|err| AuditParseError::Malformed(err.to_string()))?;
        if let Some(workload) = string_field(fields.workload, "Workload")? {
            if workload != "MicrosoftTeams" {
                return Err(AuditParseError::NotTeams(workload.chars().take(40).collect()));
            }
        }
        let id = string_field(fields.id, "Id")?.ok_or(AuditParseError::Missing("Id"))?;
        let operation = string_field(fields.operation, "Operation")?.ok_or(AuditParseError::Missing("Operation"))?;
        let organization_id = string_field(fields.organization_id, "OrganizationId")?.ok_or(AuditParseError::Missing("OrganizationId"))?;
        let created_at = string_field(fields.creation_time, "CreationTime")?.and_then(|t| parse_creation_time(&t));
        let record = Self {
            id,
            operation: Operation::parse(&operation),
            organization_id,
            created_at,
            user_id: string_field(fields.user_id, "UserId")?,
            user_key: string_field(fields.user_key, "UserKey")?,
            chat_thread_id: string_field(fields.chat_thread_id, "ChatThreadId")?,
            communication_type: string_field(fields.communication_type, "CommunicationType")?,
            members: objects_field(fields.members, "Members")?,
            participant_info: object_field(fields.participant_info, "ParticipantInfo")?,
            raw: String::new(),
        };
        Ok(Self { raw, ..record })
    }

    /// Reads a record from a parsed JSON value (its serialisation becomes the evidence).
    pub fn parse(value: Value) -> Result<Self, AuditParseError> {
        if !value.is_object() {
            return Err(AuditParseError::NotAnObject);
        }
        Self::from_json(value.to_string())
    }

    /// The record's JSON text exactly as received.
    pub fn raw_json(&self) -> &str {
        &self.raw
    }

    /// The record's JSON as a value (for reading fields chatwarden does not interpret).
    pub fn raw_value(&self) -> Value {
        serde_json::from_str(&self.raw).unwrap_or(Value::Null)
    }

    /// The domain of a UPN (lower case), when it looks like an address.
    pub(crate) fn domain_of(upn: &str) -> Option<String> {
        upn.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).filter(|d| d.contains('.'))
    }

    /// External parties of the chat: foreign tenant ids and their domains, and whether
    /// unauthenticated users took part.
    pub fn external_parties(&self) -> ExternalParties {
        let ours = self.organization_id.as_str();
        let mut parties = ExternalParties::default();
        let add_tenant = |parties: &mut ExternalParties, tenant: &str| {
            if !tenant.is_empty()
                && !tenant.eq_ignore_ascii_case(ours)
                && !parties.tenant_ids.iter().any(|t| t.eq_ignore_ascii_case(tenant))
            {
                parties.tenant_ids.push(tenant.to_ascii_lowercase());
            }
        };
        if let Some(info) = &self.participant_info {
            for sip in &info.participating_sip_domains {
                if let Some(tenant) = &sip.tenant_id {
                    if !tenant.eq_ignore_ascii_case(ours) {
                        add_tenant(&mut parties, tenant);
                        parties.add_domain(&sip.domain_name);
                    }
                }
            }
            for tenant in &info.participating_tenant_ids {
                add_tenant(&mut parties, tenant);
            }
            parties.unauthenticated = info.has_unauthenticated_users;
            parties.foreign_flag = info.has_foreign_tenant_users;
        }
        for member in &self.members {
            if let Some(tenant) = &member.organization_id {
                if !tenant.eq_ignore_ascii_case(ours) {
                    add_tenant(&mut parties, tenant);
                    if let Some(domain) = member.upn.as_deref().and_then(Self::domain_of) {
                        parties.add_domain(&domain);
                    }
                }
            }
        }
        parties
    }

    /// Members of our organisation: `OrganizationId` = ours, or no tenant given and a UPN that
    /// is not of a known external domain.
    pub fn internal_members(&self) -> Vec<&Member> {
        let parties = self.external_parties();
        self.internal_members_among(&parties).collect()
    }

    /// [`internal_members`](Self::internal_members) for a caller that already holds the record's
    /// [`external_parties`](Self::external_parties) (they are not computed twice).
    pub(crate) fn internal_members_among<'a: 'p, 'p>(&'a self, parties: &'p ExternalParties) -> impl Iterator<Item = &'a Member> + 'p {
        let ours = self.organization_id.as_str();
        self.members.iter().filter(move |m| match &m.organization_id {
            Some(tenant) => tenant.eq_ignore_ascii_case(ours),
            None => !m.upn.as_deref().and_then(Self::domain_of).is_some_and(|d| parties.domains.contains(&d)),
        })
    }
}

/// The outside world present in a chat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExternalParties {
    /// Foreign tenant ids (lower case).
    pub tenant_ids: Vec<String>,
    /// Their domains (lower case).
    pub domains: Vec<String>,
    /// Unauthenticated users took part.
    pub unauthenticated: bool,
    /// Microsoft flagged foreign-tenant users (even when the tenants are not listed).
    pub foreign_flag: bool,
}

impl ExternalParties {
    fn add_domain(&mut self, domain: &str) {
        let domain = domain.trim().to_ascii_lowercase();
        if !domain.is_empty() && !self.domains.contains(&domain) {
            self.domains.push(domain);
        }
    }

    /// Whether anyone from outside took part.
    pub fn any(&self) -> bool {
        self.unauthenticated || self.foreign_flag || !self.tenant_ids.is_empty()
    }

    /// A short description (`fabrikam.com (tenant 1d36...)`, `unauthenticated users`).
    pub(crate) fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.domains.is_empty() {
            parts.push(self.domains.join(", "));
        }
        if !self.tenant_ids.is_empty() {
            parts.push(format!("tenant {}", self.tenant_ids.join(", ")));
        }
        if self.unauthenticated {
            parts.push("unauthenticated users".into());
        }
        if parts.is_empty() && self.foreign_flag {
            parts.push("users of another tenant".into());
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn creation_time_without_zone_is_utc() {
        assert_eq!(parse_creation_time("2020-02-17T16:59:44"), Some(1_581_958_784_000));
        assert_eq!(parse_creation_time("2020-02-17T16:59:44Z"), Some(1_581_958_784_000));
        assert_eq!(parse_creation_time("2020-02-17T17:59:44.5+01:00"), Some(1_581_958_784_500));
        assert_eq!(parse_creation_time("yesterday"), None);
    }

    #[test]
    fn required_fields_and_types_are_checked() {
        assert_eq!(AuditRecord::parse(json!([])), Err(AuditParseError::NotAnObject));
        assert_eq!(AuditRecord::parse(json!({"Operation": "x", "OrganizationId": "t"})), Err(AuditParseError::Missing("Id")));
        assert_eq!(
            AuditRecord::parse(json!({"Id": "1", "Operation": "x", "OrganizationId": "t", "Workload": "Exchange"})),
            Err(AuditParseError::NotTeams("Exchange".into()))
        );
        assert_eq!(
            AuditRecord::parse(json!({"Id": "1", "Operation": "x", "OrganizationId": "t", "Members": "nope"})),
            Err(AuditParseError::WrongType("Members"))
        );
        assert_eq!(AuditRecord::parse(json!({"Id": 1, "Operation": "x", "OrganizationId": "t"})), Err(AuditParseError::WrongType("Id")));
    }

    #[test]
    fn unknown_operations_are_kept() {
        let record = AuditRecord::parse(json!({"Id": "1", "Operation": "AppInstalled", "OrganizationId": "t", "New": true})).unwrap();
        assert_eq!(record.operation, Operation::Other("AppInstalled".into()));
        assert_eq!(record.raw_value()["New"], true);
    }

    #[test]
    fn the_text_is_kept_byte_for_byte() {
        let text = "  {\"Id\":\"1\", \"Operation\" : \"MemberAdded\",\"OrganizationId\":\"t\",\"Zeta\":1.50,\"Alpha\":\"\\u00e9\"}\n";
        let record = AuditRecord::from_json(text).unwrap();
        assert_eq!(record.raw_json(), text.trim());
        assert_eq!(record.raw_value()["Alpha"], "\u{e9}");
    }

    #[test]
    fn malformed_and_ambiguous_text_is_refused() {
        assert!(matches!(AuditRecord::from_json("{\"Id\": \"1\""), Err(AuditParseError::Malformed(_))));
        assert!(matches!(AuditRecord::from_json("nope"), Err(AuditParseError::Malformed(_))));
        assert_eq!(AuditRecord::from_json("[1]"), Err(AuditParseError::NotAnObject));
        assert_eq!(AuditRecord::from_json(r#"["1", "MemberAdded", "t"]"#), Err(AuditParseError::NotAnObject));
        assert_eq!(AuditRecord::from_json("\"text\""), Err(AuditParseError::NotAnObject));
        let twice = r#"{"Id": "1", "Operation": "MemberAdded", "OrganizationId": "t", "Id": "2"}"#;
        assert!(matches!(AuditRecord::from_json(twice), Err(AuditParseError::Malformed(m)) if m.contains("duplicate field `Id`")));
        assert_eq!(
            AuditRecord::from_json(r#"{"Id": "1", "Operation": "x", "OrganizationId": "t", "ParticipantInfo": []}"#),
            Err(AuditParseError::WrongType("ParticipantInfo"))
        );
        assert_eq!(
            AuditRecord::from_json(r#"{"Id": "1", "Operation": "x", "OrganizationId": "t", "Members": [["a@b.c", "A"]]}"#),
            Err(AuditParseError::WrongType("Members"))
        );
    }

    #[test]
    fn null_and_empty_fields_count_as_absent() {
        let record = AuditRecord::from_json(
            r#"{"Id": "1", "Operation": "x", "OrganizationId": "t", "UserId": "", "UserKey": null, "Members": null, "ParticipantInfo": null}"#,
        )
        .unwrap();
        assert_eq!((record.user_id, record.user_key, record.members.len(), record.participant_info), (None, None, 0, None));
    }
}
