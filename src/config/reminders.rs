//! Reminders and escalation of undecided cases: how long before a case expires its approvers
//! are reminded, and who it is escalated to then.

use std::time::Duration;

use super::parse::{RawSettings, is_guid, lower_case_list, value_or_default};

/// Escalation targets: object ids, and groups (`group:<id>`) whose members are resolved through Graph.
pub(super) struct Escalation {
    pub(super) admins: Vec<String>,
    pub(super) groups: Vec<String>,
}

/// `CHATWARDEN_REMINDER_MINUTES` (0 = no reminder) and `CHATWARDEN_ESCALATION_ADMINS`.
pub(super) fn reminders(raw: &mut RawSettings, case_ttl: Option<Duration>, registered: bool) -> (Option<Duration>, Escalation) {
    let minutes_text = value_or_default(raw, "CHATWARDEN_REMINDER_MINUTES").trim().to_owned();
    let before = match minutes_text.parse::<u64>() {
        Ok(0) => None,
        Ok(minutes) if case_ttl.is_some_and(|ttl| Duration::from_secs(minutes * 60) >= ttl) => {
            raw.problem("CHATWARDEN_REMINDER_MINUTES", format!("`{minutes_text}` minutes is not shorter than CHATWARDEN_CASE_TTL_HOURS"));
            None
        }
        Ok(minutes) => Some(Duration::from_secs(minutes * 60)),
        Err(_) => {
            raw.problem("CHATWARDEN_REMINDER_MINUTES", format!("`{minutes_text}` must be a whole number of minutes (0 = no reminder)"));
            None
        }
    };
    let escalation = lower_case_list(raw, "CHATWARDEN_ESCALATION_ADMINS");
    let (groups, admins): (Vec<String>, Vec<String>) = escalation.iter().cloned().partition(|a| a.starts_with("group:"));
    let groups: Vec<String> = groups.into_iter().map(|g| g.trim_start_matches("group:").trim().to_owned()).collect();
    if let Some(bad) = admins.iter().chain(groups.iter()).find(|a| !is_guid(a)) {
        raw.problem("CHATWARDEN_ESCALATION_ADMINS", format!("`{bad}` is not an Entra object id (GUID), nor `group:<group object id>`"));
    } else if !groups.is_empty() && !registered {
        raw.problem("CHATWARDEN_ESCALATION_ADMINS", "groups are resolved through Graph: they need the MICROSOFT_APP_* registration");
    }
    if !escalation.is_empty() && minutes_text.parse::<u64>() == Ok(0) {
        raw.problem("CHATWARDEN_ESCALATION_ADMINS", "needs CHATWARDEN_REMINDER_MINUTES above 0: a case is escalated when it is reminded");
    }
    (before, Escalation { admins, groups })
}
