//! Every card the bot builds validates against the official Adaptive Cards 1.5 JSON schema
//! (kept in tests/fixtures/adaptive-cards, see SOURCE.md there), and untrusted text stays inert.

use chatwarden::cards;
use chatwarden::cases::{Actor, Case, CaseEvent, CaseKind, CaseSource, CaseState, CaseSummary, SUMMARY_TARGETS, Target, TargetStatus};
use serde_json::Value;

fn schema_validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(include_str!("../fixtures/adaptive-cards/schema-1.5.json")).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid(name: &str, card: &Value) {
    // scripts/test renders every card written here in headless Chromium (tests/e2e/render-cards.mjs).
    if let Ok(dir) = std::env::var("CHATWARDEN_CARD_DUMP") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/{}.json", name.replace(' ', "-")), serde_json::to_vec_pretty(card).unwrap()).unwrap();
    }
    let validator = schema_validator();
    let errors: Vec<String> = validator.iter_errors(card).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{name} is not a valid Adaptive Card: {errors:#?}\n{card:#}");
    assert_eq!(card["version"], "1.5", "{name}");
}

fn actor(name: &str) -> Actor {
    Actor { oid: "0b7c4e2a-1111-4a1b-9c2d-3e4f5a6b7c8d".into(), name: name.into(), user_id: "29:x".into() }
}

fn sample(state: CaseState, targets: usize, evidence: bool) -> Case {
    Case {
        id: "CW-7K3P9".into(),
        kind: CaseKind::RemoveChat,
        state,
        source: CaseSource::Command,
        tenant_id: "5f0e9d8c-2222-4b3c-8d7e-6f5a4b3c2d1e".into(),
        requester: actor("Dana **Admin**"),
        reason: Some("[click](https://evil.example) _now_".into()),
        no_evidence: !evidence,
        approver: (state != CaseState::Proposed).then(|| actor("Sam")),
        decided_at: Some(1_779_786_153_000),
        decision_reason: None,
        escalated_at: None,
        card: None,
        created_at: 1_779_786_000_000,
        updated_at: 1_779_786_153_000,
        expires_at: 1_779_872_400_000,
        version: 1,
        targets: (0..targets)
            .map(|i| Target {
                position: i as i64,
                thread_id: Some(format!("19:chat{i}@thread.v2")),
                user_ref: format!("user{i}@contoso.com"),
                user_oid: None,
                user_tenant_id: "t".into(),
                display_name: None,
                status: if i % 2 == 0 { TargetStatus::Done } else { TargetStatus::Failed },
                graph_status: Some(204),
                detail: Some("removed".into()),
                graph_code: None,
                receipt: None,
            })
            .collect(),
        evidence: if evidence { vec!["3a951c24-3214-5529-b2fe-097628a39ecd".into()] } else { vec![] },
    }
}

#[test]
fn the_schema_rejects_a_broken_card() {
    let validator = schema_validator();
    let broken = serde_json::json!({"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock"}]});
    assert!(!validator.is_valid(&broken));
}

#[test]
fn approval_cards_are_valid_with_and_without_evidence() {
    assert_valid("approval card", &cards::approval_card(&sample(CaseState::Proposed, 1, true), true));
    assert_valid("approval card without evidence", &cards::approval_card(&sample(CaseState::Proposed, 1, false), true));
    assert_valid("bulk approval card", &cards::approval_card(&sample(CaseState::Proposed, 40, true), false));
    let marked = cards::approval_card_marked(&sample(CaseState::Proposed, 1, true), true, Some("A reason is required for every decision."));
    assert_valid("approval card asking for a reason again", &marked);
}

#[test]
fn user_specific_views_are_valid_and_cap_their_accounts_at_60() {
    let case = sample(CaseState::Proposed, 1, true);
    let accounts: Vec<String> = (0..75).map(|i| format!("29:account-{i}")).collect();
    let waiting = cards::with_refresh(
        cards::waiting_card(&case, Some("You asked for this case: another admin must approve it.")),
        &case.id,
        &accounts,
    );
    assert_valid("waiting card with refresh", &waiting);
    assert_eq!(waiting["refresh"]["userIds"].as_array().unwrap().len(), 60);
    assert!(waiting.get("actions").is_none(), "no buttons on the shared view");
    let approver = cards::with_refresh(cards::approval_card(&case, true), &case.id, &accounts[..2]);
    assert_valid("approver view with refresh", &approver);
    assert_eq!(
        approver["refresh"]["action"],
        serde_json::json!({"type": "Action.Execute", "verb": "refresh", "data": {"chatwarden": 1, "caseId": case.id, "action": "refresh"}})
    );
}

#[test]
fn approval_cards_ask_for_a_reason_that_the_buttons_send() {
    let card = cards::approval_card(&sample(CaseState::Proposed, 1, true), true);
    let input = card["body"].as_array().unwrap().iter().find(|b| b["type"] == "Input.Text").expect("a reason field");
    assert_eq!((input["id"].as_str(), input["isRequired"].as_bool(), input["maxLength"].as_u64()), (Some("reason"), Some(true), Some(500)));
    for action in card["actions"].as_array().unwrap() {
        assert_eq!(action["associatedInputs"], "auto", "{action}");
        assert_eq!(action["fallback"]["associatedInputs"], "auto", "{action}");
    }
    let optional = cards::approval_card(&sample(CaseState::Proposed, 1, true), false);
    let input = optional["body"].as_array().unwrap().iter().find(|b| b["type"] == "Input.Text").unwrap();
    assert_eq!(input["isRequired"], false);
    let marked = cards::approval_card_marked(&sample(CaseState::Proposed, 1, true), true, Some("A reason is required for every decision."));
    let text = marked.to_string();
    assert!(text.contains("A reason is required for every decision. Nothing was decided."), "{text}");
    let input = marked["body"].as_array().unwrap().iter().find(|b| b["type"] == "Input.Text").unwrap();
    assert_eq!(input["errorMessage"], "A reason is required for every decision.");
}

#[test]
fn result_cards_are_valid_in_every_state() {
    for state in [CaseState::Approved, CaseState::Executing, CaseState::Done, CaseState::Failed, CaseState::Rejected, CaseState::Expired] {
        assert_valid(state.as_str(), &cards::result_card(&sample(state, 3, true)));
    }
}

#[test]
fn status_and_history_cards_are_valid() {
    let events = vec![CaseEvent {
        at: 1,
        actor_oid: None,
        actor_name: Some("Dana".into()),
        kind: "requested".into(),
        detail: Some("x".into()),
        data: None,
    }];
    assert_valid("status card", &cards::status_card(&sample(CaseState::Done, 2, true), &events));
    assert_valid("history card", &cards::history_card(&[sample(CaseState::Done, 5, true), sample(CaseState::Proposed, 1, false)]));
    assert_valid("empty history card", &cards::history_card(&[]));
}

#[test]
fn untrusted_text_cannot_add_links_or_formatting() {
    let card = cards::approval_card(&sample(CaseState::Proposed, 1, true), true).to_string();
    assert!(!card.contains("[click](https://evil.example)"));
    assert!(!card.contains("](https"));
    assert!(card.contains("click"), "{card}");
    assert!(!card.contains("**Admin**"));
}

#[test]
fn a_running_bulk_case_shows_its_progress_on_a_valid_card() {
    let mut case = sample(CaseState::Executing, 740, false);
    case.kind = CaseKind::RemoveExternal;
    for target in &mut case.targets[700..] {
        target.status = TargetStatus::Pending;
        target.graph_status = None;
        target.detail = None;
    }
    case.targets[1].status = TargetStatus::Skipped;
    let whole = CaseSummary::of(case);
    let card = cards::progress_card(&whole, 40);
    assert_valid("progress", &card);
    let text = card.to_string();
    assert!(text.contains("700 of 740 targets: 350 done, 1 skipped, 349 failed; 40 waiting on Graph's Retry-After."), "{card:#}");
    assert!(text.contains("**Targets (740)**") && text.contains("and 725 more"), "{card:#}");
    let idle = cards::progress_card(&whole, 0).to_string();
    assert!(idle.contains("349 failed.") && !idle.contains("waiting"), "{idle}");
    // What the store's summary holds (the first targets and the tally) draws the same card.
    let mut head = whole.clone();
    head.case.targets.truncate(SUMMARY_TARGETS);
    assert_eq!(cards::progress_card(&head, 40), card);
    assert_eq!(cards::summary_card(&head), cards::summary_card(&whole));
}

#[test]
fn a_finished_summary_offers_the_follow_up_only_when_a_target_was_done() {
    let mut case = sample(CaseState::Failed, 40, true);
    for target in &mut case.targets {
        target.status = TargetStatus::Failed;
    }
    let mut head = CaseSummary::of(case.clone());
    head.case.targets.truncate(SUMMARY_TARGETS);
    assert!(!cards::summary_card(&head).to_string().contains("revoke_sessions"));
    case.targets[39].status = TargetStatus::Done;
    let mut head = CaseSummary::of(case);
    head.case.targets.truncate(SUMMARY_TARGETS);
    assert!(head.case.targets.iter().all(|t| t.status == TargetStatus::Failed), "the done target is not among the lines");
    assert!(cards::summary_card(&head).to_string().contains("revoke_sessions"), "the tally says one was done");
}
