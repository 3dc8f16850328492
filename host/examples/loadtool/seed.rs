//! `loadtool seed`: N tenants × M commerces through the API, a policy folder
//! per tenant, and one warm-up create per commerce.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::http::Conn;
use crate::{CommerceTarget, Targets, TenantTarget, addr_of, token};

/// Provisions tenants and commerces through the API and gives each tenant a
/// policy folder.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// The running server.
    #[arg(long)]
    url: String,
    /// The server's RETEN_JWT_SECRET.
    #[arg(long, env = "RETEN_JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// The server's RETEN_POLICIES_DIR.
    #[arg(long)]
    policies: PathBuf,
    /// Where the built plugins are (`plugins/dist`).
    #[arg(long)]
    plugins: PathBuf,
    /// How many tenants.
    #[arg(long, default_value_t = 10)]
    tenants: usize,
    /// How many commerces per tenant.
    #[arg(long, default_value_t = 20)]
    commerces: usize,
    /// `load`: tenant.toml + a Wasm criterion + the Wasm `loyalty_tier`
    /// attribute (the Rhai `ROLE_MATCH` is the global one). `tenants`:
    /// tenant.toml + one Wasm and one Rhai criterion.
    #[arg(long, default_value = "load")]
    layout: String,
    /// The first K tenants are noisy: their first criterion is
    /// `test_loop.wasm`, which runs until its deadline on every call.
    #[arg(long, default_value_t = 0)]
    loop_tenants: usize,
    /// `tenants` layout: tenants from this index on get their own copy of
    /// the Wasm bytes (a distinct custom section); the ones before share one.
    #[arg(long)]
    distinct_wasm_from: Option<usize>,
    /// Skip the warm-up creates.
    #[arg(long)]
    no_warmup: bool,
    /// Provision tenants and commerces only: no policy folders (write them
    /// later with `loadtool folders`), no warm-up.
    #[arg(long)]
    no_folders: bool,
    /// Where the targets file goes.
    #[arg(long)]
    out: PathBuf,
}

/// The `sub` of every token the harness mints (and the `created_by` of the
/// activities).
pub const CALLER: &str = "load-harness";

pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let addr = addr_of(&args.url);
    let mut conn = Conn::new(&addr);
    let root = token(&args.secret, CALLER, &[], &["SUPER_ADMIN"])?;
    let run_tag = &Uuid::new_v4().simple().to_string()[..8];

    // Tenants and their commerces, through the API.
    let mut tenants = Vec::with_capacity(args.tenants);
    for index in 0..args.tenants {
        let slug = format!("load-{run_tag}-{index}");
        let body = json!({"name": format!("Load tenant {index}"), "slug": slug});
        let r = post(&mut conn, "/api/tenant/setup", &root, None, &body).await?;
        ensure!(r.status == 201, "tenant setup answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        let id: Uuid = r.json()["id"].as_str().context("tenant id")?.parse()?;
        let admin = token(&args.secret, CALLER, &[id], &["ADMIN"])?;
        for batch in (0..args.commerces).collect::<Vec<_>>().chunks(500) {
            let items: Vec<Value> = batch.iter().map(|&j| commerce(index, j)).collect();
            let r = post(&mut conn, "/api/commerces/sync", &admin, Some(id), &json!({ "items": items })).await?;
            ensure!(r.status == 201, "commerce sync answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        }
        let commerces = commerce_ids(&mut conn, &admin, id).await?;
        ensure!(commerces.len() == args.commerces, "tenant {id} has {} commerces", commerces.len());
        let role = if index < args.loop_tenants { "loop" } else { "normal" };
        tenants.push(TenantTarget {
            index,
            id,
            role: role.to_owned(),
            token: admin,
            commerces: commerces.into_iter().map(|id| CommerceTarget { id, warmup_activity: None }).collect(),
        });
    }
    println!(
        "seed: {} tenants × {} commerces through the API ({:.1} s)",
        args.tenants,
        args.commerces,
        started.elapsed().as_secs_f64()
    );

    let folders = FolderArgs {
        policies: args.policies.clone(),
        plugins: args.plugins.clone(),
        layout: args.layout.clone(),
        distinct_wasm_from: args.distinct_wasm_from,
    };
    if !args.no_folders {
        // A policy folder per tenant, then wait until each one serves.
        let written = Instant::now();
        for t in &tenants {
            write_folder(&folders, t)?;
        }
        for t in &tenants {
            wait_until_served(&mut conn, t, &expected_policies(&args.layout, &t.role)).await?;
        }
        println!(
            "seed: {} tenant policy folders serving ({:.1} s after writing them)",
            tenants.len(),
            written.elapsed().as_secs_f64()
        );
    }

    if !args.no_warmup && !args.no_folders {
        // Which policies decide, once per role: the trace of a preview.
        let mut shown = Vec::new();
        for t in &tenants {
            if shown.contains(&t.role) {
                continue;
            }
            shown.push(t.role.clone());
            let body = create_body(t.commerces[0].id, "preview");
            let r = post(&mut conn, "/api/activities/preview", &t.token, Some(t.id), &body).await?;
            ensure!(r.status == 200, "preview answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
            println!("seed: a {} tenant's create runs {}", t.role, policies_in_play(&r.json()));
        }
        // One create per commerce: warms the server (tenant cache, pool,
        // instances) and gives the pgbench scripts their values.
        for t in &mut tenants {
            for c in &mut t.commerces {
                let body = create_body(c.id, &format!("warmup-{}", Uuid::new_v4()));
                let r = post(&mut conn, "/api/activities", &t.token, Some(t.id), &body).await?;
                ensure!(r.status == 201, "warm-up create answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
                let v = r.json();
                if t.role == "normal" {
                    ensure!(v["status"] == "READY", "warm-up create is not READY: {v}");
                }
                c.warmup_activity = Some(v["id"].as_str().context("activity id")?.parse()?);
            }
        }
        println!("seed: one warm-up create per commerce");
    }

    let targets = Targets { url: args.url.clone(), tenants };
    std::fs::write(&args.out, serde_json::to_string_pretty(&targets)?)?;
    Ok(())
}

/// The body of a create, as the load sends it.
pub fn create_body(commerce: Uuid, key: &str) -> Value {
    json!({
        "type": "MESSAGE",
        "reason": "Monthly promotion",
        "channel": "WHATSAPP",
        "commerce_id": commerce,
        "idempotency_key": key,
        "scheduled_at": "2025-01-16T09:00:00.000Z",
        "attribute_keys": ["loyalty_tier"]
    })
}

/// Commerce `j` of tenant `i`: three or four users with roles and contacts,
/// an address and metadata. The owner can only be e-mailed, so on WhatsApp
/// the Wasm criterion's candidate (the owner) is skipped and the Rhai
/// `ROLE_MATCH` picks the active commerce rep: both criteria do real work.
fn commerce(i: usize, j: usize) -> Value {
    let phone = |k: usize| format!("+569{:08}", (i * 1_000 + j) * 10 + k);
    let mut users = vec![
        json!({"external_id": "u-owner", "name": "Maria Gonzalez", "roles": ["OWNER"],
               "contacts": [{"contact_type": "EMAIL", "value": format!("owner.{i}.{j}@example.com"), "is_primary": true}]}),
        json!({"external_id": "u-rep", "name": "Juan Perez", "roles": ["COMMERCE_REP"],
               "contacts": [{"contact_type": "WHATSAPP", "value": phone(1), "is_primary": true},
                            {"contact_type": "PHONE", "value": phone(2)}]}),
        json!({"external_id": "u-orders", "name": "Ana Diaz", "roles": ["ORDERS", "FINANCE"],
               "contacts": [{"contact_type": "EMAIL", "value": format!("orders.{i}.{j}@example.com"), "is_primary": true},
                            {"contact_type": "PHONE", "value": phone(3)}]}),
    ];
    if j.is_multiple_of(2) {
        users.push(json!({"external_id": "u-rep-old", "name": "Pedro Soto", "roles": ["COMMERCE_REP"],
                          "is_active": false,
                          "contacts": [{"contact_type": "WHATSAPP", "value": phone(4), "is_primary": true}]}));
    }
    let spend = 500 + (j * 1_373 + i * 7_919) % 20_000;
    json!({
        "external_id": format!("c-{j}"),
        "name": format!("Almacén {i}-{j}"),
        "tax_id": format!("76.{i:03}.{j:03}-{}", j % 10),
        "metadata": {"segment": if spend >= 10_000 { "gold" } else { "standard" }, "total_spend": spend,
                     "region": "RM", "promotions": [{"code": "2x1", "until": "2025-02-01"}]},
        "addresses": [{"street": "Av. Siempre Viva", "street_number": format!("{}", 100 + j), "city": "Santiago",
                       "country_code": "CL", "is_primary": true}],
        "users": users
    })
}

async fn post(
    conn: &mut Conn,
    path: &str,
    token: &str,
    tenant: Option<Uuid>,
    body: &Value,
) -> anyhow::Result<crate::http::Response> {
    let auth = format!("Bearer {token}");
    let tenant = tenant.map(|t| t.to_string());
    let mut headers = vec![("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    if let Some(t) = &tenant {
        headers.push(("x-tenant-id", t));
    }
    Ok(conn.send("POST", path, &headers, body.to_string().as_bytes()).await?)
}

/// `GET` as a tenant's admin.
pub async fn get(conn: &mut Conn, path: &str, token: &str, tenant: Uuid) -> anyhow::Result<crate::http::Response> {
    let auth = format!("Bearer {token}");
    let tenant = tenant.to_string();
    Ok(conn.get(path, &[("Authorization", &auth), ("x-tenant-id", &tenant)]).await?)
}

async fn commerce_ids(conn: &mut Conn, token: &str, tenant: Uuid) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for page in 1.. {
        let r = get(conn, &format!("/api/commerces?per_page=100&page={page}"), token, tenant).await?;
        ensure!(r.status == 200, "commerce list answered {}", r.status);
        let v = r.json();
        let data = v["data"].as_array().context("commerce list data")?;
        for c in data {
            ids.push(c["id"].as_str().context("commerce id")?.parse()?);
        }
        if data.len() < 100 {
            break;
        }
    }
    // The creation order (the list is newest first).
    ids.reverse();
    Ok(ids)
}

/// The tenant policies each layout puts in a folder (name, kind).
fn expected_policies(layout: &str, role: &str) -> Vec<&'static str> {
    match (layout, role) {
        ("tenants", _) => vec!["role_match_wasm", "pick_rep"],
        (_, "loop") => vec!["test_loop", "loyalty_tier"],
        _ => vec!["role_match_wasm", "loyalty_tier"],
    }
}

/// Where and how tenant policy folders are written.
#[derive(Debug, Clone, clap::Args)]
pub struct FolderArgs {
    /// The server's RETEN_POLICIES_DIR.
    #[arg(long)]
    policies: PathBuf,
    /// Where the built plugins are (`plugins/dist`).
    #[arg(long)]
    plugins: PathBuf,
    /// `load` or `tenants` (see `seed --help`).
    #[arg(long, default_value = "load")]
    layout: String,
    /// `tenants` layout: tenants from this index on get their own copy of
    /// the Wasm bytes.
    #[arg(long)]
    distinct_wasm_from: Option<usize>,
}

/// `loadtool folders`: writes the policy folders of the tenants of a targets
/// file (`--write`) and/or waits until the running server serves them all
/// (`--wait`).
#[derive(Debug, clap::Args)]
pub struct FoldersArgs {
    #[arg(long)]
    targets: PathBuf,
    #[command(flatten)]
    folders: FolderArgs,
    #[arg(long)]
    write: bool,
    #[arg(long)]
    wait: bool,
}

pub async fn folders(args: FoldersArgs) -> anyhow::Result<()> {
    let targets = Targets::read(&args.targets)?;
    if args.write {
        for t in &targets.tenants {
            write_folder(&args.folders, t)?;
        }
        println!("folders: {} tenant folders written", targets.tenants.len());
    }
    if args.wait {
        let started = Instant::now();
        let mut conn = Conn::new(&addr_of(&targets.url));
        for t in &targets.tenants {
            wait_until_served(&mut conn, t, &expected_policies(&args.folders.layout, &t.role)).await?;
        }
        println!(
            "folders: all {} tenants serve their folder ({:.1} s to check)",
            targets.tenants.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn write_folder(args: &FolderArgs, t: &TenantTarget) -> anyhow::Result<()> {
    let dir = args.policies.join("tenants").join(t.id.to_string());
    let plugin = |name: &str| -> anyhow::Result<Vec<u8>> {
        let path = args.plugins.join(format!("{name}.wasm"));
        std::fs::read(&path).with_context(|| format!("{} is missing: run plugins/build.sh", path.display()))
    };
    // The policies first, the tenant.toml that names them last, so that the
    // folder never serves a config whose criteria are missing.
    match args.layout.as_str() {
        "load" => {
            let first = if t.role == "loop" { "test_loop" } else { "role_match_wasm" };
            write(&dir.join(format!("criteria/{first}.wasm")), &plugin(first)?)?;
            write(&dir.join("attributes/loyalty_tier.wasm"), &plugin("loyalty_tier")?)?;
            write(&dir.join("tenant.toml"), load_toml(t).as_bytes())?;
        }
        "tenants" => {
            let mut wasm = plugin("role_match_wasm")?;
            if args.distinct_wasm_from.is_some_and(|from| t.index >= from) {
                append_custom_section(&mut wasm, "reten-load-copy", t.id.as_bytes());
            }
            write(&dir.join("criteria/role_match_wasm.wasm"), &wasm)?;
            write(&dir.join("criteria/pick_rep.rhai"), PICK_REP_RHAI.as_bytes())?;
            write(&dir.join("tenant.toml"), tenants_toml(t).as_bytes())?;
        }
        other => bail!("unknown layout {other}"),
    }
    Ok(())
}

/// The Rhai criterion of the `tenants` layout (the file `reload` edits).
pub const PICK_REP_RHAI: &str = r#"// PICK_REP: the active commerce reps, in the commerce's order.
fn resolve(input) {
    let out = [];
    for user in input.commerce.users {
        if user.is_active && user.roles.contains("COMMERCE_REP") {
            out.push(user.id);
        }
    }
    out
}
"#;

fn load_toml(t: &TenantTarget) -> String {
    let first = if t.role == "loop" {
        // Runs until the deadline on every call, then the Rhai criterion decides.
        "type = \"TEST_LOOP\"\npriority = 0"
    } else {
        // Proposes the owner, who cannot be reached on WhatsApp.
        "type = \"ROLE_MATCH_WASM\"\nconfig = { role = \"OWNER\" }\npriority = 0"
    };
    format!(
        r#"# Written by examples/load (loadtool seed): a Wasm criterion, then the
# global Rhai ROLE_MATCH; the Wasm attribute loyalty_tier.
name = "Load tenant {index} ({role})"

[[target_resolution]]
resolution_strategy = "ON_CREATION"
priority = 0

[[target_resolution.criteria]]
{first}

[[target_resolution.criteria]]
type = "ROLE_MATCH"
config = {{ role = "COMMERCE_REP" }}
priority = 1

[attribute_keys.loyalty_tier]
label = "Loyalty tier"

[attributes.loyalty_tier]
strategy = "UPFRONT"
config = {{ gold = 10000, silver = 2000 }}
fallback = {{ tier = "BRONZE" }}

[limits]
deadline_ms = 20
"#,
        index = t.index,
        role = t.role,
    )
}

fn tenants_toml(t: &TenantTarget) -> String {
    format!(
        r#"# Written by examples/load (loadtool seed --layout tenants).
name = "Tenant {index}"

[[target_resolution]]
resolution_strategy = "ON_CREATION"
priority = 0

[[target_resolution.criteria]]
type = "ROLE_MATCH_WASM"
config = {{ role = "OWNER" }}
priority = 0

[[target_resolution.criteria]]
type = "PICK_REP"
priority = 1

# The load sends attribute_keys = ["loyalty_tier"]; here no policy computes
# it: the fallback stands.
[attribute_keys.loyalty_tier]
label = "Loyalty tier"

[attributes.loyalty_tier]
strategy = "CALLER_PROVIDED"
fallback = {{ tier = "BRONZE" }}
"#,
        index = t.index
    )
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Appends a custom section (id 0) to a Wasm module or component: the same
/// code, different bytes (and so a different sha256 and compilation).
pub fn append_custom_section(wasm: &mut Vec<u8>, name: &str, payload: &[u8]) {
    let mut content = Vec::new();
    leb128(&mut content, name.len());
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    wasm.push(0);
    leb128(wasm, content.len());
    wasm.extend_from_slice(&content);
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Polls the tenant's policy listing until its folder serves: the expected
/// tenant policies, its tenant.toml, and no load error.
async fn wait_until_served(conn: &mut Conn, t: &TenantTarget, expected: &[&str]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = get(conn, "/api/policies", &t.token, t.id).await?;
        let v = r.json();
        let serving: Vec<&str> = v["policies"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["origin"] == "TENANT").filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        let has_config = v["configs"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["path"].as_str().is_some_and(|p| p.ends_with("tenant.toml")) && c["lastError"].is_null())
        });
        let errors = v["errors"].as_array().map(Vec::len).unwrap_or(0);
        if r.status == 200 && has_config && errors == 0 && expected.iter().all(|e| serving.contains(e)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("tenant {} does not serve its folder: {v}", t.id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// "ROLE_MATCH_WASM(wasm)=NO_MATCH, ROLE_MATCH(rhai)=MATCHED; loyalty_tier(wasm)=RESOLVED".
fn policies_in_play(preview: &Value) -> String {
    let engine = |p: &Value| p["engine"].as_str().unwrap_or("-").to_lowercase();
    let criteria: Vec<String> = preview["trace"]["target"]["criteria"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let failed = c["error"]["kind"].as_str().map(|k| format!(" ({k})")).unwrap_or_default();
                    format!("{}({})={}{failed}", c["type"].as_str().unwrap_or("?"), engine(&c["policy"]), c["outcome"])
                })
                .collect()
        })
        .unwrap_or_default();
    let attributes: Vec<String> = preview["trace"]["attributes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| format!("{}({})={}", a["key"].as_str().unwrap_or("?"), engine(&a["policy"]), a["outcome"]))
                .collect()
        })
        .unwrap_or_default();
    format!("{}; {}", criteria.join(", "), attributes.join(", ")).replace('"', "")
}
