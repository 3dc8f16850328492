//! `/api/activity-config/*`: the effective configuration, field by field.

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::support::{TestApp, sha};

#[sqlx::test(migrations = "../migrations")]
async fn the_views_match_the_global_defaults_field_by_field(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("views-global").await;
    let res = app.get(tenant, "/api/activity-config/target-resolution").await;
    res.assert_status(StatusCode::OK);
    let c = &res.body[0];
    assert_eq!(res.body.as_array().unwrap().len(), 1);
    assert_eq!(c["resolutionStrategy"], "ON_CREATION");
    assert_eq!(c["fallbackToCommerceRep"], true);
    assert_eq!(c["fallbackToOwner"], true);
    assert_eq!(c["priority"], 0);
    assert_eq!(c["isActive"], true);
    assert_eq!(c["source"], "GLOBAL");
    assert_eq!(c["criteria"][0]["criteriaType"], "ROLE_MATCH");
    assert_eq!(c["criteria"][0]["criteriaConfig"], json!({"role": "COMMERCE_REP"}));
    assert_eq!(c["criteria"][0]["priority"], 0);
    let role_match = std::fs::read(app.policies.path().join("global/criteria/role_match.rhai")).unwrap();
    assert_eq!(
        c["criteria"][0]["policy"],
        json!({"name": "role_match", "engine": "RHAI", "version": sha(&role_match), "origin": "GLOBAL"})
    );
    assert_eq!(c["criteria"][1]["criteriaType"], "LAST_CONTACTED_SAME_CHANNEL");
    assert_eq!(c["criteria"][1]["criteriaConfig"], json!({}));
    assert_eq!(c["criteria"][1]["priority"], 1);

    let keys = app.get(tenant, "/api/activity-config/attribute-keys").await;
    let k: Vec<(&str, &str)> = keys
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap(), k["label"].as_str().unwrap()))
        .collect();
    assert_eq!(k, [("commerce_info", "Commerce Info"), ("promotions", "Promotions")]);

    let policies = app.get(tenant, "/api/activity-config/attribute-policies").await;
    let p = &policies.body[0];
    assert_eq!(p["attributeKey"], json!({"key": "commerce_info", "label": "Commerce Info"}));
    assert_eq!(p["attributeKeyId"], keys.body[0]["id"]);
    assert_eq!(p["strategy"], "UPFRONT");
    assert_eq!(p["resolverType"], "INTERNAL_SERVICE");
    assert_eq!(p["policy"]["name"], "commerce_info");
    assert_eq!(p["source"], "GLOBAL");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_views_match_a_tenant_toml_field_by_field(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("views-tenant").await;
    app.write_tenant_file(tenant, "criteria/vip.rhai", "fn resolve(input) { [] }");
    app.write_tenant_file(
        tenant,
        "tenant.toml",
        r#"
        [[target_resolution]]
        resolution_strategy = "ON_DISPATCH"
        fallback_to_commerce_rep = false
        priority = 5
        channels = ["EMAIL", "SMS"]
        [[target_resolution.criteria]]
        type = "VIP"
        config = { min_spend = 100 }
        priority = 2

        [[target_resolution]]
        resolution_strategy = "MANUAL"
        fallback_to_owner = false
        priority = 1
        active = false

        [attribute_keys.coupon]
        label = "Coupon"
        description = "A welcome coupon"

        [attributes.coupon]
        strategy = "CALLER_PROVIDED"
        fallback = "WELCOME10"
        "#,
    );
    let res = app.get(tenant, "/api/activity-config/target-resolution").await;
    let configs = res.body.as_array().unwrap();
    assert_eq!(configs.len(), 2);
    let c = &configs[0];
    assert_eq!(c["resolutionStrategy"], "ON_DISPATCH");
    assert_eq!(c["fallbackToCommerceRep"], false);
    assert_eq!(c["fallbackToOwner"], true);
    assert_eq!(c["priority"], 5);
    assert_eq!(c["channels"], json!(["EMAIL", "SMS"]));
    assert_eq!(c["source"], "TENANT");
    assert_eq!(c["criteria"][0]["criteriaType"], "VIP");
    assert_eq!(c["criteria"][0]["criteriaConfig"], json!({"min_spend": 100}));
    assert_eq!(c["criteria"][0]["priority"], 2);
    assert_eq!(c["criteria"][0]["policy"]["origin"], "TENANT");
    assert_eq!(configs[1]["isActive"], false);
    assert_eq!(configs[1]["resolutionStrategy"], "MANUAL");
    assert_eq!(configs[1]["fallbackToOwner"], false);

    let keys = app.get(tenant, "/api/activity-config/attribute-keys").await;
    let coupon = keys.body.as_array().unwrap().iter().find(|k| k["key"] == "coupon").unwrap().clone();
    assert_eq!(coupon["label"], "Coupon");
    assert_eq!(coupon["description"], "A welcome coupon");
    assert_eq!(coupon["source"], "TENANT");

    let policies = app.get(tenant, "/api/activity-config/attribute-policies").await;
    let coupon =
        policies.body.as_array().unwrap().iter().find(|p| p["attributeKey"]["key"] == "coupon").unwrap().clone();
    assert_eq!(coupon["strategy"], "CALLER_PROVIDED");
    assert_eq!(coupon["resolverType"], "CALLER_PROVIDED");
    assert_eq!(coupon["fallback"], "WELCOME10");
    assert_eq!(coupon["policy"], serde_json::Value::Null);
    assert_eq!(coupon["source"], "TENANT");
}
