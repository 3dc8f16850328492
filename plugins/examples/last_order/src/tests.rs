use super::{parse_rfc3339, resolve};
use reten_policy_sdk::prelude::*;
use reten_policy_sdk::testing::{input, user};

fn users() -> Vec<CommerceUser> {
    let mut with_external = user("u3", &[]);
    with_external.external_id = Some("EXT-3".to_owned());
    vec![user("u1", &[]), user("u2", &[]), with_external]
}

#[test]
fn users_by_latest_successful_order() {
    let metadata = json!({ "orders": [
        { "commerce_user_id": "u1", "status": "DELIVERED", "placed_at": "2025-01-05T10:00:00Z" },
        { "commerce_user_id": "u2", "status": "PAID", "placed_at": "2025-01-08T10:00:00.000Z" },
        { "commerce_user_id": "u1", "status": "CANCELLED", "placed_at": "2025-01-20T10:00:00Z" },
        { "user_external_id": "EXT-3", "status": "delivered", "placed_at": "2025-01-10T09:00:00-03:00" },
        { "commerce_user_id": "u1", "status": "PAID", "placed_at": "2025-01-07T00:00:00Z" },
        { "commerce_user_id": "stranger", "status": "PAID", "placed_at": "2025-02-01T00:00:00Z" },
        { "commerce_user_id": "u2", "status": "PAID", "placed_at": "not a date" },
    ]});
    let candidates = resolve(input(users()).with_metadata(metadata)).unwrap();
    let got: Vec<_> = candidates.iter().map(|c| (c.commerce_user_id.as_str(), c.note.as_deref().unwrap())).collect();
    assert_eq!(
        got,
        [
            ("u3", "last successful order 2025-01-10T09:00:00-03:00"),
            ("u2", "last successful order 2025-01-08T10:00:00.000Z"),
            ("u1", "last successful order 2025-01-07T00:00:00Z"),
        ]
    );
}

#[test]
fn configured_statuses() {
    let metadata = json!({ "orders": [
        { "commerce_user_id": "u1", "status": "DELIVERED", "placed_at": "2025-01-05T10:00:00Z" },
        { "commerce_user_id": "u2", "status": "SHIPPED", "placed_at": "2025-01-01T10:00:00Z" },
    ]});
    let input = input(users()).with_metadata(metadata).with_config(json!({ "statuses": ["SHIPPED"] }));
    let candidates = resolve(input).unwrap();
    assert_eq!(candidates.len(), 1);
    assert_eq!(candidates[0].commerce_user_id, "u2");
}

#[test]
fn no_orders_no_candidates() {
    assert!(resolve(input(users())).unwrap().is_empty());
    let input = input(users()).with_metadata(json!({ "orders": [] }));
    assert!(resolve(input).unwrap().is_empty());
}

#[test]
fn malformed_config_is_bad_config() {
    for config in [json!({ "statuses": "PAID" }), json!({ "status": ["PAID"] })] {
        let error = resolve(input(users()).with_config(config)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadConfig);
    }
    let mut input = input(users());
    input.config = "{not json".to_owned();
    assert_eq!(resolve(input).unwrap_err().kind, ErrorKind::BadConfig);
}

#[test]
fn orders_not_an_array_is_bad_input() {
    let input = input(users()).with_metadata(json!({ "orders": {} }));
    assert_eq!(resolve(input).unwrap_err().kind, ErrorKind::BadInput);
}

#[test]
fn rfc3339() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
    assert_eq!(parse_rfc3339("2025-01-10T12:00:00.5Z"), Some((1_736_510_400, 500_000_000)));
    assert_eq!(parse_rfc3339("2025-01-10T09:00:00-03:00"), parse_rfc3339("2025-01-10T12:00:00Z"));
    assert_eq!(parse_rfc3339("2025-01-10"), None);
    assert_eq!(parse_rfc3339("2025-13-10T12:00:00Z"), None);
    assert_eq!(parse_rfc3339("2025-02-30T12:00:00Z"), None);
}
