//! Detection rules over audit records. The default rule: an internal user was added to (or
//! created) a chat whose participants include a foreign tenant or unauthenticated users, unless
//! every outside party is an allow-listed partner.

use std::collections::HashSet;

use super::record::{AuditRecord, ExternalParties, Member};

/// Configurable detection rules.
#[derive(Debug, Clone)]
pub struct DetectionRules {
    /// Whether alerts are raised at all.
    pub enabled: bool,
    /// Operations that can raise an alert (default `MemberAdded`, `ChatCreated`).
    pub operations: Vec<String>,
    /// Partner tenant ids never alerted on (lower case).
    pub allowed_tenants: HashSet<String>,
    /// Partner domains never alerted on (lower case; subdomains included).
    pub allowed_domains: HashSet<String>,
    /// Alert when unauthenticated (anonymous) users took part.
    pub unauthenticated: bool,
}

impl Default for DetectionRules {
    fn default() -> Self {
        Self {
            enabled: true,
            operations: vec!["MemberAdded".into(), "ChatCreated".into()],
            allowed_tenants: HashSet::new(),
            allowed_domains: HashSet::new(),
            unauthenticated: true,
        }
    }
}

/// One internal user in one external chat that the rules flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The chat.
    pub chat_thread_id: String,
    /// The internal member.
    pub member: Member,
    /// The outside parties that are not allow-listed.
    pub external: ExternalParties,
}

impl DetectionRules {
    /// Whether `domain` is an allow-listed partner domain or one of its subdomains.
    pub(crate) fn domain_allowed(&self, domain: &str) -> bool {
        self.allowed_domains.iter().any(|allowed| domain == allowed || domain.ends_with(&format!(".{allowed}")))
    }

    /// The outside parties of `record` that are not allow-listed.
    pub(crate) fn suspicious_parties(&self, record: &AuditRecord) -> ExternalParties {
        let all = record.external_parties();
        let tenant_ids: Vec<String> = all.tenant_ids.iter().filter(|t| !self.allowed_tenants.contains(*t)).cloned().collect();
        let domains: Vec<String> = all.domains.iter().filter(|d| !self.domain_allowed(d)).cloned().collect();
        // Microsoft's flag without any tenant listed: an outsider nobody could allow-list.
        let unlisted_foreigner = all.foreign_flag && all.tenant_ids.is_empty() && all.domains.iter().all(|d| !self.domain_allowed(d));
        ExternalParties {
            foreign_flag: unlisted_foreigner || !tenant_ids.is_empty(),
            tenant_ids,
            domains,
            unauthenticated: all.unauthenticated && self.unauthenticated,
        }
    }

    /// What the rules flag in `record`: one finding per internal member.
    pub fn evaluate(&self, record: &AuditRecord) -> Vec<Finding> {
        if !self.enabled || !self.operations.iter().any(|op| op == record.operation.as_str()) {
            return Vec::new();
        }
        let Some(chat) = record.chat_thread_id.clone() else { return Vec::new() };
        let external = self.suspicious_parties(record);
        if !(external.foreign_flag || external.unauthenticated || !external.tenant_ids.is_empty()) {
            return Vec::new();
        }
        record
            .internal_members()
            .into_iter()
            .filter(|m| m.upn.is_some() || m.user_object_id.is_some())
            .map(|member| Finding { chat_thread_id: chat.clone(), member: member.clone(), external: external.clone() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat_created(partner_tenant: &str, partner_domain: &str) -> AuditRecord {
        AuditRecord::parse(json!({
            "Id": "r1", "Operation": "ChatCreated", "OrganizationId": "ours", "Workload": "MicrosoftTeams",
            "ChatThreadId": "19:a_b@unq.gbl.spaces",
            "Members": [
                {"OrganizationId": "ours", "DisplayName": "John", "UPN": "john@contoso.com"},
                {"OrganizationId": partner_tenant, "DisplayName": "Mallory", "UPN": format!("mallory@{partner_domain}")}
            ],
            "ParticipantInfo": {"HasForeignTenantUsers": true, "ParticipatingSIPDomains": [
                {"DomainName": "contoso.com", "TenantId": "ours"}, {"DomainName": partner_domain, "TenantId": partner_tenant}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn an_internal_user_in_a_chat_with_a_foreign_tenant_is_flagged() {
        let findings = DetectionRules::default().evaluate(&chat_created("evil-tenant", "evil.example"));
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].member.upn.as_deref(), Some("john@contoso.com"));
        assert_eq!(findings[0].external.tenant_ids, ["evil-tenant"]);
        assert_eq!(findings[0].external.domains, ["evil.example"]);
    }

    #[test]
    fn allow_listed_partners_are_not_flagged_by_tenant_or_domain() {
        let mut rules = DetectionRules::default();
        rules.allowed_tenants.insert("partner-tenant".into());
        assert!(rules.evaluate(&chat_created("partner-tenant", "fabrikam.com")).is_empty());
        let mut rules = DetectionRules::default();
        rules.allowed_domains.insert("fabrikam.com".into());
        rules.allowed_tenants.insert("partner-tenant".into());
        assert!(rules.evaluate(&chat_created("partner-tenant", "eu.fabrikam.com")).is_empty());
    }

    #[test]
    fn other_operations_and_disabled_rules_flag_nothing() {
        let mut record = chat_created("evil-tenant", "evil.example");
        record.operation = crate::audit::record::Operation::MessageSent;
        assert!(DetectionRules::default().evaluate(&record).is_empty());
        let rules = DetectionRules { enabled: false, ..DetectionRules::default() };
        assert!(rules.evaluate(&chat_created("evil-tenant", "evil.example")).is_empty());
    }

    #[test]
    fn unauthenticated_participants_are_flagged_unless_turned_off() {
        let record = AuditRecord::parse(json!({
            "Id": "r2", "Operation": "MemberAdded", "OrganizationId": "ours", "ChatThreadId": "19:x@thread.v2",
            "Members": [{"UPN": "jane@contoso.com", "Role": 1}],
            "ParticipantInfo": {"HasUnauthenticatedUsers": true}
        }))
        .unwrap();
        assert_eq!(DetectionRules::default().evaluate(&record).len(), 1);
        let rules = DetectionRules { unauthenticated: false, ..DetectionRules::default() };
        assert!(rules.evaluate(&record).is_empty());
    }

    #[test]
    fn a_chat_of_our_own_tenant_is_not_flagged() {
        let record = AuditRecord::parse(json!({
            "Id": "r3", "Operation": "ChatCreated", "OrganizationId": "ours", "ChatThreadId": "19:x@thread.v2",
            "Members": [{"OrganizationId": "ours", "UPN": "a@contoso.com"}, {"OrganizationId": "ours", "UPN": "b@contoso.com"}],
            "ParticipantInfo": {"HasForeignTenantUsers": false, "ParticipatingTenantIds": ["ours"]}
        }))
        .unwrap();
        assert!(DetectionRules::default().evaluate(&record).is_empty());
    }
}
