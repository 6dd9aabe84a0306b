//! Adaptive Cards (schema 1.5) for cases: approval, result and status cards.
//!
//! Buttons are `Action.Execute` (universal actions, answered by the `adaptiveCard/action`
//! invoke) with an `Action.Submit` fallback for older clients; both carry the case id and the
//! decision in their `data`. Every string that comes from a person or an audit record goes
//! through [`plain`] so it cannot inject markdown into the card.

use serde_json::{Value, json};

use crate::cases::{Case, CaseEvent, CaseKind, CaseState, CaseSummary, Decision, SUMMARY_TARGETS, Target, TargetStatus, TargetTally};

/// Adaptive card schema version used by every card.
pub(crate) const CARD_VERSION: &str = "1.5";
/// Marker in button data that identifies chatwarden's own card actions.
pub(crate) const ACTION_MARKER: &str = "chatwarden";
/// Longest piece of user-supplied text shown on a card.
const MAX_FIELD_CHARS: usize = 300;

/// Zero-width space: breaks markdown syntax without changing what a person reads.
const BREAK: char = '\u{200B}';

/// Makes untrusted text safe for a card: no control characters or line breaks, no markdown that
/// could format it or turn it into a link, and cut to a reasonable length. Emphasis and code
/// markers become look-alike characters (`*` -> `∗`, `` ` `` -> `ˋ`, `~` -> `∼`; `_` is left alone:
/// it can only italicise, and it is common in user names); brackets, angle brackets, `://` and leading list or heading markers are
/// followed by a zero-width space, so `[x](https://evil)` or `**x**` stay visible plain text in
/// every renderer (backslash escapes are not understood everywhere).
pub fn plain(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if i >= MAX_FIELD_CHARS {
            out.push('…');
            break;
        }
        let at_start = out.trim().is_empty();
        match c {
            c if c.is_control() => out.push(' '),
            '*' => out.push('∗'),
            '`' => out.push('ˋ'),
            '~' => out.push('∼'),
            '[' | ']' | '(' | ')' | '<' | '>' | '|' | '{' | '}' | '\\' => {
                out.push(c);
                out.push(BREAK);
            }
            // `scheme://` would be turned into a link by renderers that linkify.
            ':' if chars.get(i + 1) == Some(&'/') && chars.get(i + 2) == Some(&'/') => {
                out.push(c);
                out.push(BREAK);
            }
            // A leading heading or list marker (`# x`, `- x`, `+ x`, `1. x`).
            '#' | '-' | '+' if at_start => {
                out.push(c);
                out.push(BREAK);
            }
            '.' if !at_start && out.trim().chars().all(|c| c.is_ascii_digit()) => {
                out.push(c);
                out.push(BREAK);
            }
            c => out.push(c),
        }
    }
    out
}

/// What revoking sessions does and does not do (shown on revocation cards).
pub(crate) const REVOCATION_NOTE: &str = "Revoking sign-in sessions invalidates the users' refresh tokens and browser session cookies, so \
     they must sign in again. Access tokens already issued stay valid until they expire (up to about an hour) unless Continuous \
     Access Evaluation applies. The approver's own sessions are never revoked during the run.";

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp (to the second).
pub fn timestamp(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn text(text: impl Into<String>) -> Value {
    json!({"type": "TextBlock", "text": text.into(), "wrap": true})
}

fn heading(text: impl Into<String>) -> Value {
    json!({"type": "TextBlock", "text": text.into(), "wrap": true, "weight": "Bolder", "size": "Medium", "style": "heading"})
}

fn facts(facts: Vec<(String, String)>) -> Value {
    json!({"type": "FactSet", "facts": facts.into_iter().map(|(title, value)| json!({"title": title, "value": value})).collect::<Vec<_>>()})
}

fn card(body: Vec<Value>, actions: Vec<Value>) -> Value {
    let mut card = json!({
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": body,
    });
    if !actions.is_empty() {
        card["actions"] = Value::Array(actions);
    }
    card
}

/// Data carried by a decision button.
pub(crate) fn decision_data(case_id: &str, decision: Decision) -> Value {
    let action = match decision {
        Decision::Approve => "approve",
        Decision::Reject => "reject",
    };
    json!({ACTION_MARKER: 1, "caseId": case_id, "action": action})
}

fn button(title: &str, verb: &str, data: Value, style: &str) -> Value {
    json!({
        "type": "Action.Execute",
        "title": title,
        "verb": verb,
        "data": data,
        "style": style,
        "associatedInputs": "auto",
        "fallback": {"type": "Action.Submit", "title": title, "data": data, "associatedInputs": "auto"},
    })
}

/// The id of the reason field on approval cards: its value arrives in the button's data.
pub(crate) const REASON_INPUT: &str = "reason";

/// The reason field of an approval card; `problem` marks it (a decision came without one).
fn reason_input(required: bool, problem: Option<&str>) -> Value {
    let label = if required { "Reason for your decision (required)" } else { "Reason for your decision" };
    let mut input = json!({
        "type": "Input.Text",
        "id": REASON_INPUT,
        "label": label,
        "isMultiline": true,
        "maxLength": crate::cases::MAX_DECISION_REASON,
        "placeholder": "What you checked, and why this chat must go (or stay)",
        "isRequired": required,
        "errorMessage": format!("Give a reason, up to {} characters.", crate::cases::MAX_DECISION_REASON),
    });
    if let Some(problem) = problem {
        input["errorMessage"] = json!(problem);
    }
    input
}

fn target_line(kind: CaseKind, target: &Target) -> String {
    let user = match (&target.display_name, &target.user_oid) {
        (Some(name), _) => format!("{} ({})", plain(name), plain(&target.user_ref)),
        (None, Some(oid)) if oid != &target.user_ref => format!("{} ({})", plain(&target.user_ref), plain(oid)),
        _ => plain(&target.user_ref),
    };
    match (kind, &target.thread_id) {
        (_, Some(thread)) => format!("{user} in chat {}", plain(thread)),
        _ => user,
    }
}

fn outcome_line(kind: CaseKind, target: &Target) -> String {
    let mark = match target.status {
        TargetStatus::Pending => "pending",
        TargetStatus::Done => "done",
        TargetStatus::Failed => "FAILED",
        TargetStatus::Skipped => "skipped",
    };
    let detail = target.detail.as_deref().map(plain).unwrap_or_default();
    if detail.is_empty() {
        format!("{}: {mark}", target_line(kind, target))
    } else {
        format!("{}: {mark} ({detail})", target_line(kind, target))
    }
}

/// What Graph said about a target, with the ids Microsoft support and Graph's logs know it by.
pub(crate) fn graph_receipt_line(target: &Target) -> Option<String> {
    let receipt = target.receipt.as_ref()?;
    let mut parts = Vec::new();
    if let Some(status) = target.graph_status {
        parts.push(format!("HTTP {status}"));
    }
    if let Some(code) = &target.graph_code {
        parts.push(format!("code {}", plain(code)));
    }
    if let Some(id) = &receipt.request_id {
        parts.push(format!("request-id {}", plain(id)));
    }
    parts.push(format!("client-request-id {}", plain(&receipt.client_request_id)));
    if let Some(date) = &receipt.date {
        parts.push(format!("date {}", plain(date)));
    }
    Some(format!("Graph: {}", parts.join(", ")))
}

/// A target's outcome with Graph's receipt, for `/status`.
fn outcome_with_receipt(kind: CaseKind, target: &Target) -> String {
    match graph_receipt_line(target) {
        Some(receipt) => format!("{}; {receipt}", outcome_line(kind, target)),
        None => outcome_line(kind, target),
    }
}

fn case_facts(case: &Case) -> Vec<(String, String)> {
    let mut rows = vec![
        ("Case".to_owned(), case.id.clone()),
        ("Action".to_owned(), case.kind.describe().to_owned()),
        ("Requested by".to_owned(), format!("{} ({})", plain(&case.requester.name), plain(&case.requester.oid))),
        ("Requested at".to_owned(), timestamp(case.created_at)),
    ];
    if let Some(reason) = &case.reason {
        rows.push(("Reason".to_owned(), plain(reason)));
    }
    let evidence = if case.evidence.is_empty() {
        "none found: approving overrides the evidence check (recorded)".to_owned()
    } else {
        let shown: Vec<String> = case.evidence.iter().take(5).map(|id| plain(&crate::cases::evidence_label(id))).collect();
        let more = if case.evidence.len() > 5 { format!(" and {} more", case.evidence.len() - 5) } else { String::new() };
        format!("{}{more}", shown.join(", "))
    };
    rows.push(("Evidence".to_owned(), evidence));
    rows
}

/// The targets heading (`total` of them), a line for each of the first [`SUMMARY_TARGETS`] and
/// how many more there are.
fn target_block(case: &Case, total: usize, line: fn(CaseKind, &Target) -> String) -> Vec<Value> {
    let mut blocks = vec![text(format!("**Targets ({total})**"))];
    let shown = case.targets.iter().take(SUMMARY_TARGETS.min(total));
    let lines = shown.len();
    for target in shown {
        blocks.push(text(format!("- {}", line(case.kind, target))));
    }
    if total > lines {
        blocks.push(text(format!("and {} more (see `/status {}`)", total - lines, case.id)));
    }
    blocks
}

/// The card asking an admin to approve or reject a proposed case, with a reason field
/// (required when `require_reason`).
pub fn approval_card(case: &Case, require_reason: bool) -> Value {
    approval_card_marked(case, require_reason, None)
}

/// The approval card again, its reason field marked with `problem` and a line saying nothing
/// was decided: the answer to a decision that came without a usable reason.
pub fn approval_card_marked(case: &Case, require_reason: bool, problem: Option<&str>) -> Value {
    let title = match case.kind {
        CaseKind::RevokeSessions => format!("Approval needed: revoke the sign-in sessions of {} user(s)", case.targets.len()),
        _ => format!("Approval needed: {}", case.kind.describe()),
    };
    let mut body = vec![heading(title), facts(case_facts(case))];
    body.extend(target_block(case, case.targets.len(), target_line));
    if case.kind == CaseKind::RevokeSessions {
        body.push(text(REVOCATION_NOTE));
    }
    if case.evidence.is_empty() {
        body.push(text("**No Teams audit record matches this request.** Check the chat and user before approving."));
    }
    body.push(text(format!("Decide before {}.", timestamp(case.expires_at))));
    if let Some(problem) = problem {
        body.push(json!({"type": "TextBlock", "text": format!("{problem} Nothing was decided."), "wrap": true, "color": "Attention"}));
    }
    body.push(reason_input(require_reason, problem));
    let approve_title = if case.evidence.is_empty() { "Approve without evidence" } else { "Approve" };
    let actions = vec![
        button(approve_title, "approve", decision_data(&case.id, Decision::Approve), "destructive"),
        button("Reject", "reject", decision_data(&case.id, Decision::Reject), "default"),
    ];
    card(body, actions)
}

/// A proposed case as everyone but its approvers sees it: what is asked and until when, no
/// buttons. `note` tells the viewer why (the requester: another admin must approve).
pub fn waiting_card(case: &Case, note: Option<&str>) -> Value {
    let title = match case.kind {
        CaseKind::RevokeSessions => format!("Waiting for approval: revoke the sign-in sessions of {} user(s)", case.targets.len()),
        _ => format!("Waiting for approval: {}", case.kind.describe()),
    };
    let mut body = vec![heading(title), facts(case_facts(case))];
    body.extend(target_block(case, case.targets.len(), target_line));
    body.push(text(format!("An authorised admin decides before {}.", timestamp(case.expires_at))));
    if let Some(note) = note {
        body.push(text(note));
    }
    card(body, Vec::new())
}

/// `card` with a Universal Actions `refresh` for the Teams `accounts` (at most 60): when one of
/// them views it, Teams asks for their own view of case `case_id`.
pub fn with_refresh(mut card: Value, case_id: &str, accounts: &[String]) -> Value {
    let data = json!({ACTION_MARKER: 1, "caseId": case_id, "action": "refresh"});
    let accounts = &accounts[..accounts.len().min(crate::approvers::MAX_REFRESH_USERS)];
    card["refresh"] = json!({"action": {"type": "Action.Execute", "verb": "refresh", "data": data}, "userIds": accounts});
    card
}

fn state_line(case: &Case) -> String {
    let who = case.approver.as_ref().map(|a| plain(&a.name)).unwrap_or_else(|| "nobody".into());
    let when = case.decided_at.map(timestamp).unwrap_or_default();
    let line = state_words(case, &who, &when);
    match &case.decision_reason {
        Some(reason) if case.decided_at.is_some() => format!("{line} Reason: \"{}\"", plain(reason)),
        _ => line,
    }
}

fn state_words(case: &Case, who: &str, when: &str) -> String {
    match case.state {
        CaseState::Proposed => format!("Waiting for approval until {}.", timestamp(case.expires_at)),
        CaseState::Approved => format!("Approved by {who} at {when}; about to run."),
        CaseState::Executing => format!("Approved by {who} at {when}; running now."),
        CaseState::Done => format!("Approved by {who} at {when}; done."),
        CaseState::Failed => format!("Approved by {who} at {when}; **some targets failed**."),
        CaseState::Rejected => format!("Rejected by {who} at {when}. Nothing was changed."),
        CaseState::Expired => format!("Expired at {} without a decision. Nothing was changed.", timestamp(case.expires_at)),
    }
}

/// The card that replaces the approval card once a case is decided (and as it runs).
pub fn result_card(case: &Case) -> Value {
    result_card_with(case, &TargetTally::of(&case.targets), None)
}

/// The result card of a case of any size, from its summary.
pub fn summary_card(summary: &CaseSummary) -> Value {
    result_card_with(&summary.case, &summary.tally, None)
}

/// A running case's card with its progress: what is recorded so far and how many targets
/// `waiting` on Graph's `Retry-After`.
pub fn progress_card(summary: &CaseSummary, waiting: usize) -> Value {
    result_card_with(&summary.case, &summary.tally, Some(progress_line(&summary.tally, waiting)))
}

/// "Progress: 40 of 1,000 targets: 35 done, 3 skipped, 2 failed; 20 waiting on Graph's Retry-After."
fn progress_line(tally: &TargetTally, waiting: usize) -> String {
    let mut line = format!(
        "**Progress:** {} of {} targets: {} done, {} skipped, {} failed",
        thousands(tally.recorded()),
        thousands(tally.total()),
        thousands(tally.done),
        thousands(tally.skipped),
        thousands(tally.failed)
    );
    if waiting > 0 {
        line.push_str(&format!("; {} waiting on Graph's Retry-After", thousands(waiting)));
    }
    line.push('.');
    line
}

/// 12345 -> "12,345".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn result_card_with(case: &Case, tally: &TargetTally, progress: Option<String>) -> Value {
    let title = match case.state {
        CaseState::Done => format!("Done: {}", case.kind.describe()),
        CaseState::Failed => format!("Failed: {}", case.kind.describe()),
        CaseState::Rejected => format!("Rejected: {}", case.kind.describe()),
        CaseState::Expired => format!("Expired: {}", case.kind.describe()),
        _ => format!("In progress: {}", case.kind.describe()),
    };
    let mut body = vec![heading(title), text(state_line(case))];
    body.extend(progress.map(text));
    body.push(facts(case_facts(case)));
    body.extend(target_block(case, tally.total(), outcome_line));
    let mut actions = Vec::new();
    if case.kind != CaseKind::RevokeSessions && tally.executed(case.state) {
        body.push(text("Revoking the users' sign-in sessions is the usual next step."));
        let data = json!({ACTION_MARKER: 1, "caseId": case.id, "action": "revoke_sessions"});
        actions.push(button("Revoke sign-in sessions", "revoke_sessions", data, "default"));
    }
    card(body, actions)
}

/// The card for a case in any state: the approval card while proposed, else the result card.
pub(crate) fn case_card(case: &Case, require_reason: bool) -> Value {
    if case.state == CaseState::Proposed { approval_card(case, require_reason) } else { result_card(case) }
}

/// `/status <case>`: the case and its history.
pub fn status_card(case: &Case, events: &[CaseEvent]) -> Value {
    let mut body = vec![heading(format!("Case {} ({})", case.id, case.state)), text(state_line(case)), facts(case_facts(case))];
    body.extend(target_block(case, case.targets.len(), outcome_with_receipt));
    body.push(text("**History**"));
    for event in events.iter().rev().take(20).rev() {
        let who = event.actor_name.as_deref().map(plain).unwrap_or_else(|| "chatwarden".into());
        let detail = event.detail.as_deref().map(|d| format!(": {}", plain(d))).unwrap_or_default();
        body.push(text(format!("{} {} {}{detail}", timestamp(event.at), who, plain(&event.kind))));
    }
    card(body, Vec::new())
}

/// `/history [n]`: one line per case, newest first.
pub fn history_card(cases: &[Case]) -> Value {
    let mut body = vec![heading(format!("Last {} case(s)", cases.len()))];
    if cases.is_empty() {
        body.push(text("No cases yet."));
    }
    for case in cases {
        let targets = case.targets.iter().take(3).map(|t| target_line(case.kind, t)).collect::<Vec<_>>().join("; ");
        let more = if case.targets.len() > 3 { format!(" and {} more", case.targets.len() - 3) } else { String::new() };
        let decided = match (&case.approver, &case.decision_reason) {
            (Some(a), Some(reason)) => format!("; decided by {} ({}): \"{}\"", plain(&a.name), plain(&a.oid), plain(reason)),
            (Some(a), None) => format!("; decided by {} ({})", plain(&a.name), plain(&a.oid)),
            (None, _) => String::new(),
        };
        body.push(text(format!(
            "**{}** {} [{}]: {targets}{more}; asked by {} ({}){decided}",
            case.id,
            case.kind.describe(),
            case.state,
            plain(&case.requester.name),
            plain(&case.requester.oid)
        )));
    }
    card(body, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_control_characters_are_neutralised() {
        let z = BREAK;
        assert_eq!(plain("**bold** [x](http://evil)"), format!("∗∗bold∗∗ [{z}x]{z}({z}http:{z}//evil){z}"));
        assert_eq!(plain("a\nb\tc"), "a b c");
        assert_eq!(plain("- item"), format!("-{z} item"));
        assert_eq!(plain("# title"), format!("#{z} title"));
        assert_eq!(plain("12. item"), format!("12.{z} item"));
        assert_eq!(plain("_now_ john_doe@contoso.com `x` ~y~"), "_now_ john_doe@contoso.com ˋxˋ ∼y∼");
        assert_eq!(plain("alice-smith@contoso.com"), "alice-smith@contoso.com");
        assert_eq!(plain("00000000-0000-0000-0000-000000000020"), "00000000-0000-0000-0000-000000000020");
        assert_eq!(plain("{{DATE(x)}}"), format!("{{{z}{{{z}DATE({z}x){z}}}{z}}}{z}"));
        assert_eq!(plain(&"x".repeat(400)).chars().count(), 301);
    }

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10000), "10,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(1_779_786_153_000), "2026-05-26 09:02:33 UTC");
    }
}
