use super::resolve;
use reten_policy_sdk::prelude::*;
use reten_policy_sdk::testing::{input, user};

fn ids(candidates: Vec<Candidate>) -> Vec<String> {
    candidates.into_iter().map(|c| c.commerce_user_id).collect()
}

#[test]
fn active_holders_of_the_role_in_input_order() {
    let mut inactive = user("u3", &[Role::CommerceRep]);
    inactive.is_active = false;
    let input = input(vec![
        user("u1", &[Role::Owner, Role::CommerceRep]),
        user("u2", &[Role::Owner]),
        inactive,
        user("u4", &[Role::CommerceRep]),
    ])
    .with_config(json!({ "role": "COMMERCE_REP" }));
    assert_eq!(ids(resolve(input).unwrap()), ["u1", "u4"]);
}

#[test]
fn missing_or_unknown_role_is_bad_config() {
    for config in [json!({}), json!({ "role": "BOSS" }), json!({ "role": 3 })] {
        let error = resolve(input(vec![]).with_config(config)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadConfig);
    }
}
