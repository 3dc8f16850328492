//! `POST /api/commerces/sync`, written set by set: what a re-sync replaces,
//! keeps and merges, which item a tax id clash names, and a full batch.

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{TestApp, standard_commerce};

/// The commerce as `GET /api/commerces/{id}` answers it.
async fn detail(app: &TestApp, tenant: reten_host::domain::TenantId, external_id: &str) -> Value {
    let id = app.commerce_id(tenant, external_id).await;
    let res = app.get(tenant, &format!("/api/commerces/{id}")).await;
    res.assert_status(StatusCode::OK);
    res.body
}

fn user<'a>(detail: &'a Value, external_id: &str) -> &'a Value {
    detail["users"].as_array().unwrap().iter().find(|u| u["externalId"] == external_id).expect("user is there")
}

fn contact_values(user: &Value) -> Vec<&str> {
    user["contacts"].as_array().unwrap().iter().map(|c| c["value"].as_str().unwrap()).collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn resync_replaces_sent_addresses_roles_and_contacts_and_keeps_the_absent_ones(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("replace").await;
    app.sync(tenant, json!([standard_commerce("c-1"), standard_commerce("c-2")]))
        .await
        .assert_status(StatusCode::CREATED);

    let mut c1 = standard_commerce("c-1");
    c1["addresses"] = json!([{"street": "Nueva", "street_number": "1", "city": "Talca"}]);
    c1["users"] = json!([
        {"external_id": "u-maria", "roles": ["ADMIN", "FINANCE"],
         "contacts": [{"contact_type": "EMAIL", "value": "maria@example.com"},
                      {"contact_type": "PHONE", "value": "+56944444444"}]},
        {"external_id": "u-juan", "roles": [], "contacts": []},
        {"external_id": "u-ana"}
    ]);
    let mut c2 = standard_commerce("c-2");
    c2.as_object_mut().unwrap().remove("addresses");
    c2["users"] = json!([]);
    let res = app.sync(tenant, json!([c1, c2])).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body, json!({"created": 0, "updated": 2, "total": 2}));

    let d = detail(&app, tenant, "c-1").await;
    let streets: Vec<_> = d["addresses"].as_array().unwrap().iter().map(|a| a["street"].clone()).collect();
    assert_eq!(streets, [json!("Nueva")], "sent addresses replace the stored ones");
    let maria = user(&d, "u-maria");
    assert_eq!(maria["roles"], json!([{"role": "ADMIN"}, {"role": "FINANCE"}]), "sent roles replace, in order");
    assert_eq!(contact_values(maria), ["maria@example.com", "+56944444444"], "sent contacts replace, in order");
    let juan = user(&d, "u-juan");
    assert_eq!(juan["roles"], json!([]), "an empty roles list clears them");
    assert_eq!(juan["contacts"], json!([]), "an empty contacts list clears them");
    let ana = user(&d, "u-ana");
    assert_eq!(ana["roles"], json!([{"role": "ORDERS"}]), "absent roles are kept");
    assert_eq!(contact_values(ana), ["ana@example.com"], "absent contacts are kept");

    let d2 = detail(&app, tenant, "c-2").await;
    assert_eq!(d2["addresses"].as_array().unwrap().len(), 2, "absent addresses are kept");
    assert_eq!(d2["users"].as_array().unwrap().len(), 4, "an empty users list deletes no one");
    assert_eq!(app.count("commerce_addresses").await, 3);
    // c-1: Maria 2, Juan 0, Ana and Pedro 1 each (kept); c-2: its 4 users keep 1 each.
    assert_eq!(app.count("commerce_user_contacts").await, 8);
}

#[sqlx::test(migrations = "../migrations")]
async fn resync_never_deletes_users_and_keeps_every_field_it_does_not_send(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("keep").await;
    let mut c1 = standard_commerce("c-1");
    c1["is_active"] = json!(false);
    c1["global_external_id"] = json!("g-1");
    app.sync(tenant, json!([c1])).await.assert_status(StatusCode::CREATED);

    let bare = json!({"external_id": "c-1", "name": "Renamed", "users": [
        {"external_id": "u-pedro"}, {"external_id": "u-maria"}, {"external_id": "u-new"}
    ]});
    app.sync(tenant, json!([bare])).await.assert_status(StatusCode::CREATED);
    let d = detail(&app, tenant, "c-1").await;
    assert_eq!(d["name"], "Renamed");
    assert_eq!(d["isActive"], false, "an absent is_active keeps the stored one");
    assert_eq!(d["taxId"], "tax-c-1", "an absent tax_id keeps the stored one");
    assert_eq!(d["globalExternalId"], "g-1");
    let sent = ["u-pedro", "u-maria", "u-new"];
    let users = d["users"].as_array().unwrap();
    let order: Vec<_> = users.iter().filter_map(|u| u["externalId"].as_str()).filter(|e| sent.contains(e)).collect();
    assert_eq!(order, sent, "sent users take the order they were sent in");
    assert_eq!(users.len(), 5, "users not sent are kept");
    let pedro = user(&d, "u-pedro");
    assert_eq!((&pedro["name"], &pedro["isActive"]), (&json!("Pedro Inactivo"), &json!(false)));
    assert_eq!(pedro["roles"], json!([{"role": "COMMERCE_REP"}]));
    let new = user(&d, "u-new");
    assert_eq!((&new["isActive"], &new["roles"], &new["contacts"]), (&json!(true), &json!([]), &json!([])));

    let sent = json!({"external_id": "c-1", "name": "Renamed", "is_active": true,
                      "users": [{"external_id": "u-pedro", "is_active": true, "name": "Pedro Activo"}]});
    app.sync(tenant, json!([sent])).await.assert_status(StatusCode::CREATED);
    let d = detail(&app, tenant, "c-1").await;
    assert_eq!(d["isActive"], true, "a sent is_active is applied to an existing commerce");
    let pedro = user(&d, "u-pedro");
    assert_eq!((&pedro["name"], &pedro["isActive"]), (&json!("Pedro Activo"), &json!(true)));
    assert_eq!(d["users"].as_array().unwrap().len(), 5);
}

#[sqlx::test(migrations = "../migrations")]
async fn when_only_some_items_send_is_active_or_roles_the_others_keep_theirs(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("mixed").await;
    let inactive = |external_id: &str| {
        let mut c = standard_commerce(external_id);
        c["is_active"] = json!(false);
        c
    };
    app.sync(tenant, json!([inactive("c-1"), inactive("c-2")])).await.assert_status(StatusCode::CREATED);

    let batch = json!([
        {"external_id": "c-1", "name": "x", "is_active": true,
         "users": [{"external_id": "u-pedro", "is_active": true}, {"external_id": "u-maria"}]},
        {"external_id": "c-2", "name": "x",
         "users": [{"external_id": "u-pedro"}, {"external_id": "u-maria", "roles": ["FINANCE"]}]}
    ]);
    app.sync(tenant, batch).await.assert_status(StatusCode::CREATED);

    let (c1, c2) = (detail(&app, tenant, "c-1").await, detail(&app, tenant, "c-2").await);
    assert_eq!((&c1["isActive"], &c2["isActive"]), (&json!(true), &json!(false)));
    assert_eq!((&user(&c1, "u-pedro")["isActive"], &user(&c2, "u-pedro")["isActive"]), (&json!(true), &json!(false)));
    assert_eq!(user(&c1, "u-maria")["roles"], json!([{"role": "OWNER"}]));
    assert_eq!(user(&c2, "u-maria")["roles"], json!([{"role": "FINANCE"}]));
}

#[sqlx::test(migrations = "../migrations")]
async fn resync_merges_metadata_into_the_stored_object(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("merge").await;
    app.sync(tenant, json!([standard_commerce("c-1")])).await.assert_status(StatusCode::CREATED);

    let c1 = json!({"external_id": "c-1", "name": "x", "metadata": {"segment": "silver", "tier": {"n": 1}}});
    app.sync(tenant, json!([c1])).await.assert_status(StatusCode::CREATED);
    let merged = json!({"segment": "silver", "promotions": [{"code": "2x1"}], "tier": {"n": 1}});
    assert_eq!(detail(&app, tenant, "c-1").await["metadata"], merged, "new keys added, sent keys overwritten");

    app.sync(tenant, json!([{"external_id": "c-1", "name": "x"}])).await.assert_status(StatusCode::CREATED);
    assert_eq!(detail(&app, tenant, "c-1").await["metadata"], merged, "absent metadata keeps the stored object");
}

#[sqlx::test(migrations = "../migrations")]
async fn tax_id_clash_names_the_item_that_takes_it_and_writes_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("taxid").await;
    let item = |external_id: &str, tax_id: &str| json!({"external_id": external_id, "name": "x", "tax_id": tax_id});
    app.sync(tenant, json!([item("c-1", "T1")])).await.assert_status(StatusCode::CREATED);

    let res = app.sync(tenant, json!([item("c-2", "X"), item("c-3", "T1")])).await;
    res.assert_status(StatusCode::CONFLICT);
    assert_eq!(res.body["detail"], "items[1].tax_id 'T1' is already used by another commerce");

    let res = app.sync(tenant, json!([item("c-4", "D"), item("c-5", "E"), item("c-6", "D")])).await;
    res.assert_status(StatusCode::CONFLICT);
    assert_eq!(res.body["detail"], "items[2].tax_id 'D' is already used by another commerce");
    assert_eq!(app.count("commerces").await, 1, "a refused sync writes nothing");

    // Items are written in order: a tax id freed by an earlier item may be
    // taken by a later one, but not the other way round.
    let res = app.sync(tenant, json!([item("c-1", "T2"), item("c-7", "T1")])).await;
    res.assert_status(StatusCode::CREATED);
    let res = app.sync(tenant, json!([item("c-8", "T2"), item("c-1", "T3")])).await;
    res.assert_status(StatusCode::CONFLICT);
    assert_eq!(res.body["detail"], "items[0].tax_id 'T2' is already used by another commerce");
    assert_eq!(detail(&app, tenant, "c-1").await["taxId"], "T2");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_sync_of_1000_commerces_creates_then_updates_them_all_in_one_request(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("thousand").await;
    let items: Vec<Value> = (0..1_000)
        .map(|i| {
            json!({"external_id": format!("c-{i}"), "name": format!("C {i}"), "tax_id": format!("t-{i}"),
                   "addresses": [{"street": "s"}],
                   "users": [{"external_id": "u", "contacts": [{"contact_type": "PHONE", "value": format!("+{i}")}]}]})
        })
        .collect();
    let res = app.sync(tenant, json!(items)).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body, json!({"created": 1000, "updated": 0, "total": 1000}));

    let res = app.sync(tenant, json!(items)).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body, json!({"created": 0, "updated": 1000, "total": 1000}));
    for table in ["commerces", "commerce_addresses", "commerce_users", "commerce_user_contacts"] {
        assert_eq!(app.count(table).await, 1000, "{table}: updated in place, not added again");
    }
    let d = detail(&app, tenant, "c-999").await;
    assert_eq!(contact_values(user(&d, "u")), ["+999"]);
}
