//! Commerces: sync, list, read and update.

use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::support::{TestApp, admin_token, standard_commerce, token};

#[sqlx::test(migrations = "../migrations")]
async fn sync_creates_then_updates_by_external_id(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("sync").await;
    let res = app.sync(tenant, json!([standard_commerce("c-1"), standard_commerce("c-2")])).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body, json!({"created": 2, "updated": 0, "total": 2}));

    let mut changed = standard_commerce("c-1");
    changed["name"] = json!("Renamed");
    changed["metadata"] = json!({"tier": "A"});
    changed["users"] = json!([{"external_id": "u-juan", "roles": ["COMMERCE_REP", "ADMIN"]}]);
    let res = app.sync(tenant, json!([changed, standard_commerce("c-3")])).await;
    assert_eq!(res.body, json!({"created": 1, "updated": 1, "total": 2}));

    let id = app.commerce_id(tenant, "c-1").await;
    let detail = app.get(tenant, &format!("/api/commerces/{id}")).await;
    detail.assert_status(StatusCode::OK);
    let d = &detail.body;
    assert_eq!(d["name"], "Renamed");
    assert_eq!(d["externalId"], "c-1");
    assert_eq!(
        d["metadata"],
        json!({"segment": "gold", "promotions": [{"code": "2x1"}], "tier": "A"}),
        "metadata is merged"
    );
    assert_eq!(d["addresses"].as_array().unwrap().len(), 2);
    assert_eq!(d["addresses"][0]["isPrimary"], true);
    let users = d["users"].as_array().unwrap();
    assert_eq!(users.len(), 4, "users not listed in a sync are kept");
    let juan = users.iter().find(|u| u["externalId"] == "u-juan").unwrap();
    assert_eq!(juan["roles"], json!([{"role": "COMMERCE_REP"}, {"role": "ADMIN"}]));
    assert_eq!(juan["contacts"][0]["type"], "PHONE", "contacts are kept when not sent");
    assert_eq!(juan["firstName"], "Juan");
}

#[sqlx::test(migrations = "../migrations")]
async fn sync_refuses_bad_items_and_writes_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("syncbad").await;
    let res = app
        .sync(tenant, json!([{"external_id": "c-1", "name": "A", "users": [{"external_id": "u", "roles": ["BOSS"]}]}]))
        .await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["items[0].users[0].roles[0]"]);

    let items: Vec<_> = (0..1001).map(|i| json!({"external_id": format!("c-{i}"), "name": "x"})).collect();
    let res = app.sync(tenant, json!(items)).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["items"]);

    let mut a = standard_commerce("c-1");
    a["tax_id"] = json!("same");
    let mut b = standard_commerce("c-2");
    b["tax_id"] = json!("same");
    let res = app.sync(tenant, json!([a, b])).await;
    res.assert_status(StatusCode::CONFLICT);
    assert!(res.body["detail"].as_str().unwrap().contains("items[1].tax_id"));
    assert_eq!(app.count("commerces").await, 0, "a failed sync writes nothing");

    let viewer = token("v", &[tenant], &["FDE"], &[]);
    let res =
        app.call(Method::POST, "/api/commerces/sync", Some(&viewer), Some(tenant), Some(&json!({"items": []}))).await;
    res.assert_status(StatusCode::FORBIDDEN);
}

#[sqlx::test(migrations = "../migrations")]
async fn commerces_list_with_filters_and_patch_merges_metadata(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("clist").await;
    let mut inactive = standard_commerce("c-2");
    inactive["is_active"] = json!(false);
    inactive["name"] = json!("Ferretería Sur");
    app.sync(tenant, json!([standard_commerce("c-1"), inactive])).await.assert_status(StatusCode::CREATED);

    let res = app.get(tenant, "/api/commerces?is_active=false").await;
    assert_eq!(res.body["meta"]["total"], 1);
    assert_eq!(res.body["data"][0]["externalId"], "c-2");
    let res = app.get(tenant, "/api/commerces?search=ferre").await;
    assert_eq!(res.body["meta"]["total"], 1);
    let res = app.get(tenant, "/api/commerces?search=c-&page=2&limit=1").await;
    assert_eq!(res.body["meta"], json!({"page": 2, "limit": 1, "total": 2, "totalPages": 2}));

    let id = app.commerce_id(tenant, "c-1").await;
    let patch = json!({"name": "Nuevo", "metadata": {"segment": "silver", "vip": true}, "tax_id": null});
    let res = app
        .call(Method::PATCH, &format!("/api/commerces/{id}"), Some(&admin_token(tenant)), Some(tenant), Some(&patch))
        .await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["name"], "Nuevo");
    assert_eq!(res.body["taxId"], serde_json::Value::Null);
    assert_eq!(res.body["metadata"], json!({"segment": "silver", "vip": true, "promotions": [{"code": "2x1"}]}));

    let other = app.commerce_id(tenant, "c-2").await;
    let res = app
        .call(
            Method::PATCH,
            &format!("/api/commerces/{other}"),
            Some(&admin_token(tenant)),
            Some(tenant),
            Some(&json!({"tax_id": "tax-c-2"})),
        )
        .await;
    res.assert_status(StatusCode::OK);
    let res = app
        .call(
            Method::PATCH,
            &format!("/api/commerces/{id}"),
            Some(&admin_token(tenant)),
            Some(tenant),
            Some(&json!({"tax_id": "tax-c-2"})),
        )
        .await;
    res.assert_status(StatusCode::CONFLICT);
    let res = app
        .call(
            Method::PATCH,
            &format!("/api/commerces/{id}"),
            Some(&admin_token(tenant)),
            Some(tenant),
            Some(&json!({"colour": 1})),
        )
        .await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["colour"]);
}

/// Postgres prints a jsonb number in full decimal form (`-1.797…e308` comes back as 309 digits), and
/// serde_json's fast float parser overflowed on it: the row saved, then every read of it answered 500.
/// Found by schemathesis (seed 20261129).
#[sqlx::test(migrations = "../migrations")]
async fn extreme_metadata_numbers_round_trip(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("cnum").await;
    app.sync(tenant, json!([standard_commerce("c-1")])).await.assert_status(StatusCode::CREATED);
    let id = app.commerce_id(tenant, "c-1").await;
    let metadata = json!({
        "max": f64::MAX, "min": -f64::MAX, "tiny": 5e-324, "normal": f64::MIN_POSITIVE,
        "nested": [[-1.797_693_134_862_315_7e308, 0.1]], "big": u64::MAX, "neg": i64::MIN,
    });
    let res = app
        .call(
            Method::PATCH,
            &format!("/api/commerces/{id}"),
            Some(&admin_token(tenant)),
            Some(tenant),
            Some(&json!({"metadata": metadata})),
        )
        .await;
    res.assert_status(StatusCode::OK);
    let expected = json!({"max": f64::MAX, "min": -f64::MAX, "tiny": 5e-324, "normal": f64::MIN_POSITIVE,
        "nested": [[-f64::MAX, 0.1]], "big": u64::MAX, "neg": i64::MIN, "segment": "gold", "promotions": [{"code": "2x1"}]});
    assert_eq!(res.body["metadata"], expected);
    let res = app.get(tenant, &format!("/api/commerces/{id}")).await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["metadata"], expected);
    let res = app.get(tenant, "/api/commerces?limit=76").await;
    res.assert_status(StatusCode::OK);
    assert_eq!(res.body["data"][0]["metadata"], expected);

    // A number no f64 holds is refused at the door, named, instead of being stored.
    let res = app
        .call_raw(
            Method::PATCH,
            &format!("/api/commerces/{id}"),
            Some(&admin_token(tenant)),
            Some(tenant),
            Some(r#"{"metadata": {"x": 1e400}}"#.to_owned()),
        )
        .await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert!(res.body["detail"].as_str().unwrap_or_default().contains("number out of range"), "{}", res.body);
    let res = app.get(tenant, &format!("/api/commerces/{id}")).await;
    assert_eq!(res.body["metadata"], expected, "the refused patch changed nothing");
}
