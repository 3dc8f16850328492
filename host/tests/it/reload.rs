//! Hot reload: every kind of change to the policies directory ends on the
//! right version, without a restart and without a failed request. Each test
//! waits on the registry's generation, never on a timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::support::{TestApp, copy_dir, plugin, repo_policies, seed_body, sha, write};

const PICK_OWNER: &str =
    "fn resolve(input) { input.commerce.users.filter(|u| u.roles.contains(\"OWNER\")).map(|u| u.id) }";
const PICK_REP: &str =
    "fn resolve(input) { input.commerce.users.filter(|u| u.roles.contains(\"COMMERCE_REP\")).map(|u| u.id) }";

fn pick_body(commerce: uuid::Uuid, key: &str) -> serde_json::Value {
    let mut b = seed_body(commerce, key);
    b["target_criteria"] = json!([{"type": "PICK"}]);
    b
}

/// The user an activity went to, and the policy version that chose them.
async fn decide(
    app: &TestApp,
    tenant: reten_host::domain::TenantId,
    commerce: uuid::Uuid,
    key: &str,
) -> (String, String) {
    let res = app.create_activity(tenant, &pick_body(commerce, key)).await;
    res.assert_status(StatusCode::CREATED);
    let t = &res.body["targetUsers"][0];
    (
        t["commerceUser"]["externalId"].as_str().unwrap_or("-").to_owned(),
        t["policyVersion"].as_str().unwrap_or("-").to_owned(),
    )
}

#[sqlx::test(migrations = "../migrations")]
async fn a_changed_rhai_file_takes_effect(pool: PgPool) {
    let (app, _w) = TestApp::watching(pool).await;
    let (tenant, commerce) = app.seeded("reload-rhai").await;
    write(&app.tenant_path(tenant, "criteria/pick.rhai"), PICK_OWNER.as_bytes());
    app.wait_for("v1", |_| app.criterion_version(tenant, "PICK") == Some(sha(PICK_OWNER.as_bytes()))).await;
    assert_eq!(decide(&app, tenant, commerce, "r-1").await.0, "u-maria");

    write(&app.tenant_path(tenant, "criteria/pick.rhai"), PICK_REP.as_bytes());
    app.wait_for("v2", |_| app.criterion_version(tenant, "PICK") == Some(sha(PICK_REP.as_bytes()))).await;
    assert_eq!(decide(&app, tenant, commerce, "r-2").await, ("u-juan".into(), sha(PICK_REP.as_bytes())));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_changed_wasm_file_takes_effect(pool: PgPool) {
    let (app, _w) = TestApp::watching(pool).await;
    let (tenant, commerce) = app.seeded("reload-wasm").await;
    let (owner, rep) = (plugin("test_pick_owner"), plugin("test_pick_rep"));
    write(&app.tenant_path(tenant, "criteria/pick.wasm"), &owner);
    app.wait_for("owner build", |_| app.criterion_version(tenant, "PICK") == Some(sha(&owner))).await;
    assert_eq!(decide(&app, tenant, commerce, "w-1").await.0, "u-maria");

    write(&app.tenant_path(tenant, "criteria/pick.wasm"), &rep);
    app.wait_for("rep build", |_| app.criterion_version(tenant, "PICK") == Some(sha(&rep))).await;
    assert_eq!(decide(&app, tenant, commerce, "w-2").await, ("u-juan".into(), sha(&rep)));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_broken_file_leaves_the_old_version_serving_and_shows_its_error(pool: PgPool) {
    let (app, _w) = TestApp::watching(pool).await;
    let (tenant, commerce) = app.seeded("reload-broken").await;
    let path = app.tenant_path(tenant, "criteria/pick.rhai");
    write(&path, PICK_OWNER.as_bytes());
    app.wait_for("v1", |_| app.criterion_version(tenant, "PICK") == Some(sha(PICK_OWNER.as_bytes()))).await;

    write(&path, b"fn resolve(input) {\n    let x = ;\n}\n");
    app.wait_for("the error", |s| s.errors().any(|e| e.path.ends_with("criteria/pick.rhai"))).await;
    assert_eq!(decide(&app, tenant, commerce, "b-1").await, ("u-maria".into(), sha(PICK_OWNER.as_bytes())));

    let listing = app.get(tenant, "/api/policies").await;
    listing.assert_status(StatusCode::OK);
    let pick = listing.body["policies"].as_array().unwrap().iter().find(|p| p["name"] == "pick").unwrap().clone();
    assert_eq!(pick["version"], sha(PICK_OWNER.as_bytes()).as_str());
    assert_eq!(pick["lastError"]["line"], 2, "{pick}");
    assert!(pick["lastError"]["message"].as_str().unwrap().len() > 3);
    assert_eq!(listing.body["errors"][0]["path"], format!("tenants/{tenant}/criteria/pick.rhai").as_str());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_file_written_in_two_halves_ends_on_the_complete_version(pool: PgPool) {
    use std::io::Write as _;
    let (app, _w) = TestApp::watching(pool).await;
    let (tenant, commerce) = app.seeded("reload-halves").await;
    let path = app.tenant_path(tenant, "criteria/pick.rhai");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let (first, second) = PICK_REP.split_at(PICK_REP.len() / 2);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(first.as_bytes()).unwrap();
    f.sync_all().unwrap();
    // The half file is seen and refused: nothing serves under PICK yet.
    app.wait_for("the half file's error", |s| s.errors().any(|e| e.path.ends_with("criteria/pick.rhai"))).await;
    assert_eq!(app.criterion_version(tenant, "PICK"), None);
    f.write_all(second.as_bytes()).unwrap();
    f.sync_all().unwrap();
    drop(f);
    app.wait_for("the whole file", |_| app.criterion_version(tenant, "PICK") == Some(sha(PICK_REP.as_bytes()))).await;
    assert_eq!(decide(&app, tenant, commerce, "h-1").await.0, "u-juan");
    assert!(!app.state.registry.state().errors().any(|e| e.path.ends_with("pick.rhai")), "the error clears");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_atomic_rename_is_picked_up_and_editor_temp_files_are_ignored(pool: PgPool) {
    let (app, _w) = TestApp::watching(pool).await;
    let (tenant, commerce) = app.seeded("reload-rename").await;
    let dir = app.tenant_path(tenant, "criteria");
    write(&dir.join(".pick.rhai.swp"), b"garbage");
    write(&dir.join("pick.rhai~"), b"garbage");
    write(&dir.join("4913"), b"");
    write(&dir.join(".pick.rhai.tmp"), PICK_REP.as_bytes());
    std::fs::rename(dir.join(".pick.rhai.tmp"), dir.join("pick.rhai")).unwrap();
    app.wait_for("the renamed file", |_| app.criterion_version(tenant, "PICK") == Some(sha(PICK_REP.as_bytes()))).await;
    assert_eq!(decide(&app, tenant, commerce, "n-1").await.0, "u-juan");
    assert_eq!(app.state.registry.state().errors().count(), 0, "temp files are not policies");
}

#[sqlx::test(migrations = "../migrations")]
async fn deleting_a_tenants_override_falls_back_to_the_global_policy(pool: PgPool) {
    let (app, _w) = TestApp::watching(pool).await;
    let (tenant, commerce) = app.seeded("reload-delete").await;
    let global = app.criterion_version(tenant, "ROLE_MATCH").unwrap();
    let path = app.tenant_path(tenant, "criteria/role_match.rhai");
    write(&path, PICK_OWNER.as_bytes());
    app.wait_for("the override", |_| app.criterion_version(tenant, "ROLE_MATCH") == Some(sha(PICK_OWNER.as_bytes())))
        .await;
    std::fs::remove_file(&path).unwrap();
    app.wait_for("the global policy", |_| app.criterion_version(tenant, "ROLE_MATCH").as_ref() == Some(&global)).await;
    let res = app.create_activity(tenant, &seed_body(commerce, "d-1")).await;
    assert_eq!(res.body["targetUsers"][0]["policyVersion"], global.as_str());
    assert_eq!(res.body["targetUsers"][0]["commerceUser"]["externalId"], "u-juan");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_new_tenant_folder_is_picked_up(pool: PgPool) {
    let (app, _w) = TestApp::watching(pool).await;
    let (tenant, commerce) = app.seeded("reload-new").await;
    assert!(!app.state.registry.state().tenants.contains_key(&tenant));
    write(&app.tenant_path(tenant, "criteria/pick.rhai"), PICK_OWNER.as_bytes());
    write(&app.tenant_path(tenant, "tenant.toml"), b"name = \"New\"\n");
    app.wait_for("the new folder", |s| {
        s.tenants.get(&tenant).is_some_and(|l| l.config.is_some()) && app.criterion_version(tenant, "PICK").is_some()
    })
    .await;
    assert_eq!(decide(&app, tenant, commerce, "f-1").await.0, "u-maria");
}

/// Lays out a Kubernetes ConfigMap volume: `..<version>/` holds the files,
/// `..data` points at it, and `global`/`tenants` point through `..data`.
fn configmap_version(root: &std::path::Path, version: &str, tenant: Option<(reten_host::domain::TenantId, &str)>) {
    let dir = root.join(format!("..{version}"));
    copy_dir(&repo_policies().join("global"), &dir.join("global"));
    std::fs::create_dir_all(dir.join("tenants")).unwrap();
    if let Some((id, source)) = tenant {
        write(&dir.join("tenants").join(id.to_string()).join("criteria/pick.rhai"), source.as_bytes());
    }
}

fn configmap_swap(root: &std::path::Path, version: &str) {
    let tmp = root.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, root.join("..data")).unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_configmap_style_symlink_swap_is_picked_up(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    configmap_version(root, "v1", None);
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/global", root.join("global")).unwrap();
    std::os::unix::fs::symlink("..data/tenants", root.join("tenants")).unwrap();
    let (app, _w) = TestApp::watching_dir(pool, dir).await;
    let (tenant, commerce) = app.seeded("configmap").await;
    let root = app.policies.path().to_owned();

    configmap_version(&root, "v2", Some((tenant, PICK_OWNER)));
    configmap_swap(&root, "v2");
    app.wait_for("v2", |_| app.criterion_version(tenant, "PICK") == Some(sha(PICK_OWNER.as_bytes()))).await;
    assert_eq!(decide(&app, tenant, commerce, "cm-1").await.0, "u-maria");

    configmap_version(&root, "v3", Some((tenant, PICK_REP)));
    configmap_swap(&root, "v3");
    std::fs::remove_dir_all(root.join("..v2")).unwrap();
    app.wait_for("v3", |_| app.criterion_version(tenant, "PICK") == Some(sha(PICK_REP.as_bytes()))).await;
    assert_eq!(decide(&app, tenant, commerce, "cm-2").await.0, "u-juan");
}

#[sqlx::test(migrations = "../migrations")]
async fn fifty_swaps_under_continuous_traffic_fail_no_request_and_never_mix_versions(pool: PgPool) {
    let (app, _w) = TestApp::watching(pool).await;
    let (tenant, commerce) = app.seeded("reload-traffic").await;
    let path = app.tenant_path(tenant, "criteria/pick.rhai");
    write(&path, PICK_OWNER.as_bytes());
    app.wait_for("v1", |_| app.criterion_version(tenant, "PICK") == Some(sha(PICK_OWNER.as_bytes()))).await;

    let app = Arc::new(app);
    let stop = Arc::new(AtomicBool::new(false));
    // Counts the answers, so that each swap can wait for traffic to have
    // flowed since the previous one (a reload takes milliseconds).
    let (answered_tx, mut answered) = tokio::sync::watch::channel(0_usize);
    let answered_tx = Arc::new(answered_tx);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (app, stop, answered_tx) = (Arc::clone(&app), Arc::clone(&stop), Arc::clone(&answered_tx));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let res = app.create_activity(tenant, &pick_body(commerce, &format!("t-{w}-{i}"))).await;
                    let t = &res.body["targetUsers"][0];
                    seen.push((
                        res.status,
                        t["commerceUser"]["externalId"].as_str().unwrap_or("-").to_owned(),
                        t["policyVersion"].as_str().unwrap_or("-").to_owned(),
                    ));
                    answered_tx.send_modify(|n| *n += 1);
                    i += 1;
                }
                seen
            })
        })
        .collect();

    let versions = [(PICK_OWNER, "u-maria"), (PICK_REP, "u-juan")];
    for swap in 1..=50 {
        let (source, _) = versions[swap % 2];
        let tmp = path.with_file_name(".pick.rhai.next");
        write(&tmp, source.as_bytes());
        std::fs::rename(&tmp, &path).unwrap();
        app.wait_for("the swap", |_| app.criterion_version(tenant, "PICK") == Some(sha(source.as_bytes()))).await;
        let before = *answered.borrow_and_update();
        tokio::time::timeout(std::time::Duration::from_secs(20), answered.wait_for(|n| *n > before))
            .await
            .expect("traffic flowed after the swap")
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    for w in workers {
        for (status, user, version) in w.await.unwrap() {
            total += 1;
            assert_eq!(status, StatusCode::CREATED);
            let expected = versions.iter().find(|(s, _)| sha(s.as_bytes()) == version).map(|(_, u)| *u);
            assert_eq!(Some(user.as_str()), expected, "the user matches the version that decided ({version})");
        }
    }
    assert!(total >= 50, "traffic flowed during the swaps ({total} requests)");
    assert_eq!(app.count("activities").await, total);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_file_rewritten_in_place_with_the_same_length_takes_effect(pool: PgPool) {
    let (app, _w) = TestApp::watching(pool).await;
    let (tenant, commerce) = app.seeded("reload-same-length").await;
    let first = "fn resolve(input) { [input.commerce.users[0].id] }";
    let second = "fn resolve(input) { [input.commerce.users[1].id] }";
    assert_eq!(first.len(), second.len());
    let path = app.tenant_path(tenant, "criteria/pick.rhai");
    write(&path, first.as_bytes());
    app.wait_for("v1", |_| app.criterion_version(tenant, "PICK") == Some(sha(first.as_bytes()))).await;
    // Same inode, same size, and very likely the same coarse mtime.
    std::fs::write(&path, second.as_bytes()).unwrap();
    app.wait_for("v2", |_| app.criterion_version(tenant, "PICK") == Some(sha(second.as_bytes()))).await;
    assert_eq!(decide(&app, tenant, commerce, "sl-1").await.0, "u-juan");
    // A rescan of everything still sees the current file.
    app.state.registry.reload_all();
    assert_eq!(app.criterion_version(tenant, "PICK"), Some(sha(second.as_bytes())));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failed_file_edit_does_not_advance_the_generation_and_shows_its_error(pool: PgPool) {
    // Reloads by hand, so that both files of the edit are surely in one.
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("reload-failed-generation").await;
    let path = app.tenant_path(tenant, "criteria/pick.rhai");
    write(&path, PICK_OWNER.as_bytes());
    app.state.registry.reload_all();
    let generation = app.state.registry.generation();

    // A good file and a broken one in one edit: the set does not load whole,
    // so neither serves.
    write(&app.tenant_path(tenant, "criteria/rep.rhai"), PICK_REP.as_bytes());
    write(&path, b"fn resolve(input) {\n    let x = ;\n}\n");
    assert_eq!(app.state.registry.reload_all(), generation, "a failed reload keeps the generation");
    assert!(app.state.registry.state().errors().any(|e| e.path.ends_with("criteria/pick.rhai")));
    assert_eq!(app.criterion_version(tenant, "REP"), None, "no part of the failed set serves");
    assert_eq!(decide(&app, tenant, commerce, "fg-1").await, ("u-maria".into(), sha(PICK_OWNER.as_bytes())));
    let listing = app.get(tenant, "/api/policies").await;
    assert_eq!(listing.body["generation"], generation);
    assert_eq!(listing.body["errors"][0]["path"], format!("tenants/{tenant}/criteria/pick.rhai").as_str());

    write(&path, PICK_REP.as_bytes());
    assert_eq!(app.state.registry.reload_all(), generation + 1, "the fixed set serves in one generation");
    assert!(app.criterion_version(tenant, "REP").is_some());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_file_edit_that_leaves_a_dangling_reference_keeps_the_last_valid_set_serving(pool: PgPool) {
    let (app, _w) = TestApp::watching(pool).await;
    let (tenant, commerce) = app.seeded("reload-dangling").await;
    let criterion = app.tenant_path(tenant, "criteria/pick.rhai");
    write(&criterion, PICK_OWNER.as_bytes());
    write(
        &app.tenant_path(tenant, "tenant.toml"),
        b"[[target_resolution]]\nresolution_strategy = \"ON_CREATION\"\n[[target_resolution.criteria]]\ntype = \"PICK\"\n",
    );
    app.wait_for("the set", |s| s.tenants.get(&tenant).is_some_and(|l| l.config.is_some() && l.errors.is_empty()))
        .await;
    let generation = app.state.registry.generation();

    std::fs::remove_file(&criterion).unwrap();
    app.wait_for("the reference error", |s| s.errors().any(|e| e.path.ends_with("tenant.toml"))).await;
    let error = app.state.registry.state().errors().find(|e| e.path.ends_with("tenant.toml")).unwrap().clone();
    assert!(error.message.contains("PICK"), "the error names the type: {}", error.message);
    assert_eq!(app.state.registry.generation(), generation);
    let res = app.create_activity(tenant, &seed_body(commerce, "dg-1")).await;
    let target = &res.body["targetUsers"][0];
    assert_eq!(target["criterionType"], "PICK", "the last valid set serves: {target}");
    assert_eq!(target["policyVersion"], sha(PICK_OWNER.as_bytes()).as_str());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_layer_another_process_is_still_writing_is_not_read_until_its_marker_goes(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, _) = app.seeded("reload-marker").await;
    let marker = app.tenant_path(tenant, reten_host::policy::set::MARKER);
    write(&app.tenant_path(tenant, "criteria/pick.rhai"), PICK_OWNER.as_bytes());
    app.state.registry.reload_all();
    let generation = app.state.registry.generation();

    // Half of another process's change: the new file is there, the marker too.
    write(&marker, b"4242");
    write(&app.tenant_path(tenant, "criteria/rep.rhai"), PICK_REP.as_bytes());
    assert_eq!(app.state.registry.reload_all(), generation);
    assert_eq!(app.criterion_version(tenant, "REP"), None, "a change in progress is not read");
    assert_eq!(app.criterion_version(tenant, "PICK"), Some(sha(PICK_OWNER.as_bytes())), "what served still serves");

    std::fs::remove_file(&marker).unwrap();
    assert_eq!(app.state.registry.reload_all(), generation + 1);
    assert_eq!(app.criterion_version(tenant, "REP"), Some(sha(PICK_REP.as_bytes())));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_written_file_serves_without_waiting_out_the_debounce(pool: PgPool) {
    // A debounce far longer than the wait: only a reload that starts on the
    // first event (and on the file's close) can serve within it.
    let policies = tempfile::tempdir().unwrap();
    copy_dir(&repo_policies(), policies.path());
    let (app, _w) = TestApp::watching_with(pool, policies, std::time::Duration::from_secs(600)).await;
    let (tenant, commerce) = app.seeded("reload-prompt").await;
    write(&app.tenant_path(tenant, "criteria/pick.rhai"), PICK_REP.as_bytes());
    app.wait_for("the new file", |_| app.criterion_version(tenant, "PICK") == Some(sha(PICK_REP.as_bytes()))).await;
    assert_eq!(decide(&app, tenant, commerce, "p-1").await.0, "u-juan");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_burst_of_rewrites_ends_on_the_last_version(pool: PgPool) {
    let policies = tempfile::tempdir().unwrap();
    copy_dir(&repo_policies(), policies.path());
    let (app, _w) = TestApp::watching_with(pool, policies, std::time::Duration::from_secs(600)).await;
    let (tenant, commerce) = app.seeded("reload-burst").await;
    let path = app.tenant_path(tenant, "criteria/pick.rhai");
    write(&path, PICK_OWNER.as_bytes());
    // Back to back: most land while an earlier one is being reloaded, and
    // the trailing reload must pick up the last.
    for i in 0..40 {
        std::fs::write(&path, format!("{PICK_OWNER}\n// {i}\n")).unwrap();
    }
    std::fs::write(&path, PICK_REP).unwrap();
    app.wait_for("the last version", |_| app.criterion_version(tenant, "PICK") == Some(sha(PICK_REP.as_bytes()))).await;
    assert_eq!(decide(&app, tenant, commerce, "bu-1").await, ("u-juan".into(), sha(PICK_REP.as_bytes())));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reload_of_one_tenant_rebuilds_that_tenants_snapshot_and_keeps_the_others(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (a, _) = app.seeded("reload-one-a").await;
    let (b, _) = app.seeded("reload-one-b").await;
    app.write_tenant_bytes(a, "criteria/pick.rhai", PICK_OWNER.as_bytes());
    app.write_tenant_bytes(b, "criteria/pick.rhai", PICK_OWNER.as_bytes());
    let registry = &app.state.registry;
    let (before_a, before_b) = (registry.snapshot(a), registry.snapshot(b));

    write(&app.tenant_path(a, "criteria/pick.rhai"), PICK_REP.as_bytes());
    let generation = registry.reload(&[reten_host::policy::loader::Scope::Tenant(a)].into());

    assert_eq!(generation, before_a.generation + 1);
    let (after_a, after_b) = (registry.snapshot(a), registry.snapshot(b));
    assert_eq!(after_a.criterion("PICK").map(|p| p.version.clone()), Some(sha(PICK_REP.as_bytes())));
    assert_eq!(after_a.generation, generation);
    assert!(Arc::ptr_eq(&before_b, &after_b), "an unchanged tenant keeps its snapshot (built in its generation)");
    assert_eq!(registry.state().generation, generation);
}
