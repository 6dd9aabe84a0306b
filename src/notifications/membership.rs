//! Detection over chat membership: who in a chat is ours and who is outside, and which
//! (chat, internal user) pairs a new member makes suspicious, through the same rules and
//! partner allow-lists as audit records.

use crate::audit::detection::{DetectionRules, Finding};
use crate::audit::record::{ExternalParties, Member};

use super::payload::ChatMember;

/// Where a member stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    /// A user of our tenant.
    Internal,
    /// Outside, and not an allow-listed partner.
    Suspicious(ExternalParties),
    /// Outside, but allow-listed (or a kind the rules do not alert on).
    Tolerated,
}

fn domain_of(email: Option<&str>) -> Option<String> {
    email.and_then(|e| e.rsplit_once('@')).map(|(_, d)| d.trim().to_ascii_lowercase()).filter(|d| !d.is_empty())
}

fn side(member: &ChatMember, our_tenant: &str, rules: &DetectionRules) -> Side {
    let kind = member.odata_type.as_deref().unwrap_or_default().to_ascii_lowercase();
    let tenant = member.tenant_id.as_deref().map(str::to_ascii_lowercase).filter(|t| !t.is_empty());
    let domain = domain_of(member.email.as_deref());
    if kind.contains("anonymousguest") || (tenant.is_none() && member.user_id.is_none()) {
        if !rules.unauthenticated {
            return Side::Tolerated;
        }
        return Side::Suspicious(ExternalParties { unauthenticated: true, ..ExternalParties::default() });
    }
    match tenant {
        Some(tenant) if tenant == our_tenant => Side::Internal,
        Some(tenant) => {
            if rules.allowed_tenants.contains(&tenant) || domain.as_deref().is_some_and(|d| rules.domain_allowed(d)) {
                return Side::Tolerated;
            }
            Side::Suspicious(ExternalParties {
                tenant_ids: vec![tenant],
                domains: domain.into_iter().collect(),
                ..ExternalParties::default()
            })
        }
        // A Teams (consumer) account or another federated user with no tenant of ours.
        None => {
            if domain.as_deref().is_some_and(|d| rules.domain_allowed(d)) {
                return Side::Tolerated;
            }
            Side::Suspicious(ExternalParties { foreign_flag: true, domains: domain.into_iter().collect(), ..ExternalParties::default() })
        }
    }
}

fn merge(into: &mut ExternalParties, more: ExternalParties) {
    for tenant in more.tenant_ids {
        if !into.tenant_ids.contains(&tenant) {
            into.tenant_ids.push(tenant);
        }
    }
    for domain in more.domains {
        if !into.domains.contains(&domain) {
            into.domains.push(domain);
        }
    }
    into.unauthenticated |= more.unauthenticated;
    into.foreign_flag |= more.foreign_flag;
}

/// The member as audit findings name people.
pub(crate) fn as_member(member: &ChatMember) -> Member {
    Member {
        upn: member.email.as_ref().map(|e| e.to_ascii_lowercase()),
        display_name: member.display_name.clone(),
        user_object_id: member.user_id.as_ref().map(|o| o.to_ascii_lowercase()),
        organization_id: member.tenant_id.clone(),
        role: None,
    }
}

/// The findings `added` joining `chat` makes, given everyone in it (`added` may or may not be
/// listed): an outsider added makes a finding for every internal member; an internal user
/// added to a chat with outsiders makes one for them.
pub(crate) fn findings(chat: &str, added: &ChatMember, members: &[ChatMember], our_tenant: &str, rules: &DetectionRules) -> Vec<Finding> {
    if !rules.enabled {
        return Vec::new();
    }
    let our_tenant = our_tenant.to_ascii_lowercase();
    let same = |a: &ChatMember, b: &ChatMember| {
        a.user_id.is_some() && a.user_id.as_deref().map(str::to_ascii_lowercase) == b.user_id.as_deref().map(str::to_ascii_lowercase)
    };
    let mut outside = ExternalParties::default();
    let mut internal: Vec<&ChatMember> = Vec::new();
    for member in members.iter().filter(|m| !same(m, added)).chain(std::iter::once(added)) {
        match side(member, &our_tenant, rules) {
            Side::Internal => internal.push(member),
            Side::Suspicious(parties) => merge(&mut outside, parties),
            Side::Tolerated => {}
        }
    }
    if !outside.any() {
        return Vec::new();
    }
    let added_side = side(added, &our_tenant, rules);
    let flagged: Vec<&ChatMember> = match added_side {
        Side::Internal => vec![added],
        Side::Suspicious(_) => internal,
        Side::Tolerated => Vec::new(),
    };
    flagged
        .into_iter()
        .filter(|m| m.user_id.is_some() || m.email.is_some())
        .map(|m| Finding { chat_thread_id: chat.to_owned(), member: as_member(m), external: outside.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user: &str, tenant: Option<&str>, email: &str) -> ChatMember {
        ChatMember {
            odata_type: Some("#microsoft.graph.aadUserConversationMember".into()),
            user_id: Some(user.into()),
            tenant_id: tenant.map(str::to_owned),
            display_name: Some(user.to_uppercase()),
            email: Some(email.into()),
        }
    }

    #[test]
    fn an_outsider_added_flags_every_internal_member_and_an_insider_added_flags_only_them() {
        let rules = DetectionRules::default();
        let john = member("john", Some("ours"), "john@contoso.com");
        let jane = member("jane", Some("OURS"), "jane@contoso.com");
        let mallory = member("mallory", Some("evil"), "mallory@evil.example");
        let found = findings("19:c@thread.v2", &mallory, &[john.clone(), jane.clone(), mallory.clone()], "ours", &rules);
        let users: Vec<_> = found.iter().map(|f| f.member.user_object_id.clone().unwrap()).collect();
        assert_eq!(users, ["john", "jane"]);
        assert_eq!(found[0].external.tenant_ids, ["evil"]);
        assert_eq!(found[0].external.domains, ["evil.example"]);

        let found = findings("19:c@thread.v2", &jane, &[john.clone(), mallory.clone()], "ours", &rules);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].member.upn.as_deref(), Some("jane@contoso.com"));

        assert!(findings("19:c@thread.v2", &jane, std::slice::from_ref(&john), "ours", &rules).is_empty(), "a chat of our own tenant");
    }

    #[test]
    fn partners_anonymous_guests_and_consumer_accounts_follow_the_rules() {
        let mut rules = DetectionRules::default();
        rules.allowed_tenants.insert("partner".into());
        rules.allowed_domains.insert("fabrikam.com".into());
        let john = member("john", Some("ours"), "john@contoso.com");
        assert!(findings("19:c", &member("p", Some("partner"), "p@x.example"), std::slice::from_ref(&john), "ours", &rules).is_empty());
        assert!(findings("19:c", &member("f", Some("other"), "f@eu.fabrikam.com"), std::slice::from_ref(&john), "ours", &rules).is_empty());
        let guest = ChatMember { odata_type: Some("#microsoft.graph.anonymousGuestConversationMember".into()), ..ChatMember::default() };
        let found = findings("19:c", &guest, std::slice::from_ref(&john), "ours", &rules);
        assert_eq!(found.len(), 1);
        assert!(found[0].external.unauthenticated);
        let no_anonymous = DetectionRules { unauthenticated: false, ..rules.clone() };
        assert!(findings("19:c", &guest, std::slice::from_ref(&john), "ours", &no_anonymous).is_empty());
        let consumer = ChatMember { user_id: Some("live".into()), email: Some("eve@outlook.com".into()), ..ChatMember::default() };
        let found = findings("19:c", &consumer, std::slice::from_ref(&john), "ours", &rules);
        assert!(found[0].external.foreign_flag);
        let disabled = DetectionRules { enabled: false, ..DetectionRules::default() };
        assert!(findings("19:c", &member("m", Some("evil"), "m@e.example"), &[john], "ours", &disabled).is_empty());
    }
}
