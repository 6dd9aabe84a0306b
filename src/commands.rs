//! Command text -> typed [`Command`], with one precise error per rule.
//!
//! The input is the message text with the bot's mention already removed
//! ([`crate::botframework::activity::Activity::text_without_bot_mention`]). The leading slash is
//! optional and command names are case-insensitive. Every error names the bad argument and
//! carries the usage line of its command.

use std::fmt;

use crate::cases::CaseId;

/// Longest reason kept (longer ones are refused, not cut).
pub(crate) const MAX_REASON_CHARS: usize = 500;
/// Default and largest `/history` length.
pub(crate) const DEFAULT_HISTORY: u32 = 10;
/// Largest `/history` length.
pub(crate) const MAX_HISTORY: u32 = 50;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Remove a user's access to a chat.
    RemoveChat {
        /// The chat.
        thread: ChatThreadId,
        /// The user of ours to remove.
        user: UserRef,
        /// Why (free text).
        reason: Option<String>,
    },
    /// Revoke the sign-in sessions of a user or of every user in a group.
    RevokeSessions {
        /// A user, or `group:<id>` for every transitive user member.
        target: RevokeTarget,
        /// The requester's free-text reason, shown on the card and in the history.
        reason: Option<String>,
    },
    /// Remove every internal user from every chat with an external party.
    RemoveExternal {
        /// The external tenant or domain.
        party: ExternalParty,
        /// The requester's free-text reason, shown on the card and in the history.
        reason: Option<String>,
    },
    /// Show one case.
    Status {
        /// The case id as typed (checked and upper-cased).
        case_id: CaseId,
    },
    /// List the last cases.
    History {
        /// How many.
        limit: u32,
    },
    /// Show the help text.
    Help,
}

/// A Teams chat id (`19:...@thread.v2`, `19:...@unq.gbl.spaces`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatThreadId(String);

/// A user given as an Entra object id or a UPN (both stored lower-case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserRef {
    /// Entra object id (GUID).
    ObjectId(String),
    /// User principal name.
    Upn(String),
}

/// Whose sessions to revoke.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RevokeTarget {
    /// One user.
    User(UserRef),
    /// Every transitive user member of an Entra group (object id).
    Group(String),
}

impl RevokeTarget {
    /// Parses a user (object id or UPN) or `group:<group object id>`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if let Some(group) = text.strip_prefix("group:").or_else(|| text.strip_prefix("GROUP:")) {
            let group = group.to_ascii_lowercase();
            return if is_guid(&group) { Ok(Self::Group(group)) } else { Err("a group is given as group:<group object id>") };
        }
        UserRef::parse(text).map(Self::User).map_err(|_| "expected a UPN, an Entra object id, or group:<group object id>")
    }
}

/// An external party: a tenant id or a DNS domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExternalParty {
    /// Entra tenant id.
    TenantId(String),
    /// Domain such as `evil.example`.
    Domain(String),
}

/// Why a command could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but the mention was sent.
    Empty,
    /// Not a known command.
    Unknown(String),
    /// A required argument is missing.
    MissingArgument {
        /// The argument's name, e.g. `<thread-id>`.
        argument: &'static str,
        /// The command's usage line.
        usage: &'static str,
    },
    /// An argument has the wrong form.
    InvalidArgument {
        /// The argument's name.
        argument: &'static str,
        /// What was given (cut to 80 characters).
        value: String,
        /// What is wrong.
        why: &'static str,
        /// The command's usage line.
        usage: &'static str,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("No command given."),
            ParseError::Unknown(name) => write!(f, "Unknown command `{name}`."),
            ParseError::MissingArgument { argument, usage } => write!(f, "Missing {argument}. Usage: `{usage}`"),
            ParseError::InvalidArgument { argument, value, why, usage } => {
                write!(f, "Invalid {argument} `{value}`: {why}. Usage: `{usage}`")
            }
        }
    }
}

/// Usage lines, in help order.
pub(crate) const USAGE_REMOVE_CHAT: &str = "/remove-chat <thread-id> <user> [reason...]";
/// Usage of `/revoke-sessions`.
pub(crate) const USAGE_REVOKE_SESSIONS: &str = "/revoke-sessions <user|group:id> [reason...]";
/// Usage of `/remove-external`.
pub(crate) const USAGE_REMOVE_EXTERNAL: &str = "/remove-external <tenant-id|domain> [reason...]";
/// Usage of `/status`.
pub(crate) const USAGE_STATUS: &str = "/status <case-id>";
/// Usage of `/history`.
pub(crate) const USAGE_HISTORY: &str = "/history [n]";
/// Usage of `/help`.
pub(crate) const USAGE_HELP: &str = "/help";

/// The help text shown for `/help` and for unknown commands (markdown).
pub(crate) fn help_text() -> String {
    let lines = [
        "**chatwarden** removes malicious external chats, on an admin's approval.".to_owned(),
        String::new(),
        format!(
            "- `{USAGE_REMOVE_CHAT}`: remove a user of ours from a chat (thread id `19:...@thread.v2` or `...@unq.gbl.spaces`; user = UPN or Entra object id)"
        ),
        format!("- `{USAGE_REVOKE_SESSIONS}`: revoke the sign-in sessions of a user, or of every user in a group"),
        format!("- `{USAGE_REMOVE_EXTERNAL}`: remove our users from every chat with that external tenant or domain"),
        format!("- `{USAGE_STATUS}`: show one case and its history"),
        format!("- `{USAGE_HISTORY}`: list the last n cases (default {DEFAULT_HISTORY})"),
        format!("- `{USAGE_HELP}`: this text"),
        String::new(),
        "Every action waits for an authorised admin to approve it.".to_owned(),
    ];
    lines.join("\n")
}

fn cut(value: &str) -> String {
    value.chars().take(80).collect()
}

fn is_guid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() == 5 && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_domain(text: &str) -> bool {
    let labels: Vec<&str> = text.split('.').collect();
    text.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| tld.chars().any(|c| c.is_ascii_alphabetic()))
}

/// Chat thread suffixes that `removeAllAccessForUser` applies to (and their channel cousins).
const THREAD_SUFFIXES: [&str; 4] = ["@unq.gbl.spaces", "@thread.v2", "@thread.skype", "@thread.tacv2"];

impl ChatThreadId {
    /// Parses a chat id: `19:` + id + one of the known suffixes; no whitespace or markup.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.len() > 512 {
            return Err("is too long");
        }
        let Some(rest) = text.strip_prefix("19:") else { return Err("a chat id starts with `19:`") };
        let lower = rest.to_ascii_lowercase();
        let Some(suffix) = THREAD_SUFFIXES.iter().find(|s| lower.ends_with(*s)) else {
            return Err("a chat id ends with @thread.v2, @unq.gbl.spaces, @thread.skype or @thread.tacv2");
        };
        let body = &rest[..rest.len() - suffix.len()];
        if body.is_empty() || !body.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
            return Err("the part between `19:` and `@` may hold only letters, digits, `-`, `_`, `.` and `:`");
        }
        Ok(Self(format!("19:{body}{suffix}")))
    }

    /// The id as Graph expects it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChatThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl UserRef {
    /// Parses an Entra object id or a UPN (`name@domain.tld`).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let lower = text.to_ascii_lowercase();
        if is_guid(&lower) {
            return Ok(Self::ObjectId(lower));
        }
        match lower.split_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && local.len() <= 64
                    && local.chars().all(|c| c.is_ascii_alphanumeric() || "._-'+!#$%&*=?^`{|}~".contains(c))
                    && is_domain(domain) =>
            {
                Ok(Self::Upn(lower))
            }
            _ => Err("expected an Entra object id (GUID) or a UPN such as alice@contoso.com"),
        }
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserRef::ObjectId(id) | UserRef::Upn(id) => f.write_str(id),
        }
    }
}

impl ExternalParty {
    /// Parses a tenant id (GUID) or a domain.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let lower = text.to_ascii_lowercase();
        if is_guid(&lower) {
            Ok(Self::TenantId(lower))
        } else if is_domain(&lower) {
            Ok(Self::Domain(lower))
        } else {
            Err("expected a tenant id (GUID) or a domain such as fabrikam.com")
        }
    }
}

impl fmt::Display for ExternalParty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExternalParty::TenantId(id) | ExternalParty::Domain(id) => f.write_str(id),
        }
    }
}

struct Args<'a> {
    words: std::iter::Peekable<std::str::SplitWhitespace<'a>>,
    text: &'a str,
    usage: &'static str,
}

impl<'a> Args<'a> {
    fn required(&mut self, argument: &'static str) -> Result<&'a str, ParseError> {
        self.words.next().ok_or(ParseError::MissingArgument { argument, usage: self.usage })
    }

    fn check<T>(&self, argument: &'static str, value: &str, parsed: Result<T, &'static str>) -> Result<T, ParseError> {
        parsed.map_err(|why| ParseError::InvalidArgument { argument, value: cut(value), why, usage: self.usage })
    }

    /// The rest of the text (original spacing kept) after the words consumed so far.
    fn reason(mut self) -> Result<Option<String>, ParseError> {
        let Some(first) = self.words.peek().copied() else { return Ok(None) };
        // `first` is a slice of `text`, so its offset locates the rest of the line.
        let offset = first.as_ptr() as usize - self.text.as_ptr() as usize;
        let reason = self.text[offset..].trim().to_owned();
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(ParseError::InvalidArgument {
                argument: "[reason]",
                value: cut(&reason),
                why: "is longer than 500 characters",
                usage: self.usage,
            });
        }
        Ok(Some(reason))
    }

    fn no_more(mut self) -> Result<(), ParseError> {
        match self.words.next() {
            None => Ok(()),
            Some(extra) => {
                Err(ParseError::InvalidArgument { argument: "argument", value: cut(extra), why: "is not expected here", usage: self.usage })
            }
        }
    }
}

/// Parses command text (mention already removed).
pub fn parse(text: &str) -> Result<Command, ParseError> {
    let text = text.trim();
    let mut words = text.split_whitespace();
    let Some(name) = words.next() else { return Err(ParseError::Empty) };
    let name_lower = name.trim_start_matches('/').to_ascii_lowercase();
    let rest_start = name.len();
    let rest = &text[rest_start..];
    let args = |usage| Args { words: rest.split_whitespace().peekable(), text: rest, usage };
    match name_lower.as_str() {
        "remove-chat" => {
            let mut a = args(USAGE_REMOVE_CHAT);
            let raw_thread = a.required("<thread-id>")?;
            let thread = a.check("<thread-id>", raw_thread, ChatThreadId::parse(raw_thread))?;
            let raw_user = a.required("<user>")?;
            let user = a.check("<user>", raw_user, UserRef::parse(raw_user))?;
            Ok(Command::RemoveChat { thread, user, reason: a.reason()? })
        }
        "revoke-sessions" => {
            let mut a = args(USAGE_REVOKE_SESSIONS);
            let raw = a.required("<user|group:id>")?;
            let target = a.check("<user|group:id>", raw, RevokeTarget::parse(raw))?;
            Ok(Command::RevokeSessions { target, reason: a.reason()? })
        }
        "remove-external" => {
            let mut a = args(USAGE_REMOVE_EXTERNAL);
            let raw = a.required("<tenant-id|domain>")?;
            let party = a.check("<tenant-id|domain>", raw, ExternalParty::parse(raw))?;
            Ok(Command::RemoveExternal { party, reason: a.reason()? })
        }
        "status" => {
            let mut a = args(USAGE_STATUS);
            let raw = a.required("<case-id>")?;
            let case_id = a.check("<case-id>", raw, CaseId::parse(raw))?;
            a.no_more()?;
            Ok(Command::Status { case_id })
        }
        "history" => {
            let mut a = args(USAGE_HISTORY);
            let limit = match a.words.next() {
                None => DEFAULT_HISTORY,
                Some(raw) => a.check(
                    "[n]",
                    raw,
                    raw.parse::<u32>().ok().filter(|n| (1..=MAX_HISTORY).contains(n)).ok_or("must be a number from 1 to 50"),
                )?,
            };
            a.no_more()?;
            Ok(Command::History { limit })
        }
        "help" | "?" => Ok(Command::Help),
        _ => Err(ParseError::Unknown(cut(name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREAD: &str = "19:11dbae04-5d5d-4bc7-9766-16793ed91233_4fdb1e07-a7e9-475c-a5e2-8d042a6c8102@unq.gbl.spaces";
    const OID: &str = "4fdb1e07-a7e9-475c-a5e2-8d042a6c8102";

    #[test]
    fn remove_chat_with_guid_and_reason() {
        let cmd = parse(&format!("/remove-chat {THREAD} {OID}  phishing   link")).unwrap();
        assert_eq!(
            cmd,
            Command::RemoveChat {
                thread: ChatThreadId(THREAD.into()),
                user: UserRef::ObjectId(OID.into()),
                reason: Some("phishing   link".into())
            }
        );
    }

    #[test]
    fn slash_is_optional_and_names_are_case_insensitive() {
        let cmd = parse("Remove-Chat 19:abc@thread.v2 Alice@Contoso.com").unwrap();
        assert_eq!(
            cmd,
            Command::RemoveChat {
                thread: ChatThreadId("19:abc@thread.v2".into()),
                user: UserRef::Upn("alice@contoso.com".into()),
                reason: None
            }
        );
    }

    #[test]
    fn every_thread_kind_is_accepted() {
        for t in ["19:abc@thread.v2", "19:meeting_NzQ3Y2I0@thread.v2", "19:x@thread.skype", "19:y@thread.tacv2", THREAD] {
            assert!(ChatThreadId::parse(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn bad_thread_ids_name_the_argument_and_show_usage() {
        for bad in ["abc@thread.v2", "19:abc@evil.com", "19:@thread.v2", "19:a<b@thread.v2"] {
            match parse(&format!("/remove-chat {bad} {OID}")) {
                Err(ParseError::InvalidArgument { argument: "<thread-id>", usage: USAGE_REMOVE_CHAT, .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_arguments_are_named() {
        assert_eq!(parse("/remove-chat"), Err(ParseError::MissingArgument { argument: "<thread-id>", usage: USAGE_REMOVE_CHAT }));
        assert_eq!(parse("/remove-chat 19:a@thread.v2"), Err(ParseError::MissingArgument { argument: "<user>", usage: USAGE_REMOVE_CHAT }));
        assert_eq!(parse("/status"), Err(ParseError::MissingArgument { argument: "<case-id>", usage: USAGE_STATUS }));
    }

    #[test]
    fn bad_users_are_refused() {
        for bad in ["alice", "alice@", "@contoso.com", "alice@contoso", "29:1AbC", "<at>Bob</at>"] {
            assert!(UserRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn external_party_is_a_tenant_or_a_domain() {
        assert_eq!(
            parse("/remove-external Evil.Example").unwrap(),
            Command::RemoveExternal { party: ExternalParty::Domain("evil.example".into()), reason: None }
        );
        assert_eq!(
            parse(&format!("remove-external {OID} spam")).unwrap(),
            Command::RemoveExternal { party: ExternalParty::TenantId(OID.into()), reason: Some("spam".into()) }
        );
        assert!(matches!(parse("/remove-external not_a_domain"), Err(ParseError::InvalidArgument { argument: "<tenant-id|domain>", .. })));
    }

    #[test]
    fn history_defaults_and_bounds() {
        assert_eq!(parse("/history").unwrap(), Command::History { limit: 10 });
        assert_eq!(parse("/history 3").unwrap(), Command::History { limit: 3 });
        assert!(matches!(parse("/history 0"), Err(ParseError::InvalidArgument { argument: "[n]", .. })));
        assert!(matches!(parse("/history 51"), Err(ParseError::InvalidArgument { argument: "[n]", .. })));
        assert!(matches!(parse("/history 3 4"), Err(ParseError::InvalidArgument { argument: "argument", .. })));
    }

    #[test]
    fn status_upper_cases_the_case_id() {
        assert_eq!(parse("/status cw-7k3p").unwrap(), Command::Status { case_id: CaseId::parse("CW-7K3P").unwrap() });
    }

    #[test]
    fn unknown_and_empty() {
        assert_eq!(parse("   "), Err(ParseError::Empty));
        assert_eq!(parse("/frobnicate now"), Err(ParseError::Unknown("/frobnicate".into())));
        assert_eq!(parse("help"), Ok(Command::Help));
    }

    #[test]
    fn revoke_sessions_takes_a_user_or_a_group() {
        assert_eq!(
            parse("/revoke-sessions Alice@Contoso.com compromised").unwrap(),
            Command::RevokeSessions {
                target: RevokeTarget::User(UserRef::Upn("alice@contoso.com".into())),
                reason: Some("compromised".into())
            }
        );
        assert_eq!(
            parse(&format!("/revoke-sessions group:{}", OID.to_uppercase())).unwrap(),
            Command::RevokeSessions { target: RevokeTarget::Group(OID.into()), reason: None }
        );
        assert!(matches!(parse("/revoke-sessions group:finance"), Err(ParseError::InvalidArgument { argument: "<user|group:id>", .. })));
    }

    #[test]
    fn overlong_reasons_are_refused() {
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        assert!(matches!(parse(&format!("/revoke-sessions {OID} {long}")), Err(ParseError::InvalidArgument { argument: "[reason]", .. })));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parsing_never_panics_and_errors_always_explain_themselves(text in "\\PC{0,300}") {
                match parse(&text) {
                    Ok(_) => {}
                    Err(err) => prop_assert!(!err.to_string().is_empty()),
                }
            }

            #[test]
            fn a_well_formed_remove_chat_round_trips(
                id in "[A-Za-z0-9_-]{1,40}",
                suffix in prop::sample::select(vec!["@thread.v2", "@unq.gbl.spaces", "@thread.skype", "@thread.tacv2"]),
                local in "[a-z][a-z0-9.]{0,15}",
                domain in "[a-z]{1,12}\\.(com|org|example)",
                reason in "[ -~]{0,60}",
                slash in any::<bool>(),
            ) {
                let thread = format!("19:{id}{suffix}");
                let upn = format!("{local}@{domain}");
                let text = format!("{}remove-chat {thread} {upn} {reason}", if slash { "/" } else { "" });
                let parsed = parse(&text).unwrap();
                let expected_reason = Some(reason.trim().to_owned()).filter(|r| !r.is_empty());
                prop_assert_eq!(parsed, Command::RemoveChat { thread: ChatThreadId(thread), user: UserRef::Upn(upn), reason: expected_reason });
            }

            #[test]
            fn thread_ids_never_accept_whitespace_or_markup(id in "[A-Za-z0-9]{0,10}[ <>\"'\\[\\]()]{1,3}[A-Za-z0-9]{0,10}") {
                let thread = format!("19:{id}@thread.v2");
                prop_assert!(ChatThreadId::parse(&thread).is_err());
            }
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        let err = parse("/remove-chat nope x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid <thread-id> `nope`: a chat id starts with `19:`. Usage: `/remove-chat <thread-id> <user> [reason...]`"
        );
    }
}
