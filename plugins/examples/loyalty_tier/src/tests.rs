use super::resolve;
use reten_policy_sdk::prelude::*;
use reten_policy_sdk::testing::input;

fn tier(metadata: Value, config: Value) -> Result<Option<Value>, PolicyError> {
    resolve(input(vec![]).with_metadata(metadata).with_config(config))
}

#[test]
fn tiers_with_default_thresholds() {
    let cases = [(12_000, "GOLD"), (10_000, "GOLD"), (2_000, "SILVER"), (1_999, "BRONZE")];
    for (spend, expected) in cases {
        let value = tier(json!({ "total_spend": spend }), json!({})).unwrap();
        assert_eq!(value, Some(json!({ "tier": expected, "total_spend": spend })));
    }
}

#[test]
fn configured_thresholds() {
    let value = tier(json!({ "total_spend": 150.5 }), json!({ "gold": 200, "silver": 100 }));
    assert_eq!(value.unwrap(), Some(json!({ "tier": "SILVER", "total_spend": 150.5 })));
}

#[test]
fn no_spend_is_nothing() {
    assert_eq!(tier(json!({}), json!({})).unwrap(), None);
    assert_eq!(tier(json!({ "total_spend": null }), json!({})).unwrap(), None);
}

#[test]
fn bad_config_and_bad_input() {
    let error = tier(json!({ "total_spend": 1 }), json!({ "gold": "lots" })).unwrap_err();
    assert_eq!(error.kind, ErrorKind::BadConfig);
    let error = tier(json!({ "total_spend": 1 }), json!({ "gold": 1, "silver": 2 })).unwrap_err();
    assert_eq!(error.kind, ErrorKind::BadConfig);
    let error = tier(json!({ "total_spend": "1" }), json!({})).unwrap_err();
    assert_eq!(error.kind, ErrorKind::BadInput);
}
