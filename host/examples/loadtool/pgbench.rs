//! pgbench scripts that replay, statement for statement, what one
//! `POST /api/activities` sends to Postgres: `LOAD_FOR_CREATE_SQL` then
//! `INSERT_ACTIVITY_SQL`, each its own implicit transaction, built from the
//! very constants the service prepares. Each `$N` becomes a literal of the
//! value a real create of that tenant and commerce bound (read back from the
//! rows that create wrote), or, where every transaction needs a fresh value,
//! an expression ([`NEW_ID`] for ids, `now()` for the creation time)
//! or the pgbench variable `:key` for the idempotency key — a parameter, as
//! the service sends it: a volatile expression there would keep the
//! idempotency lookup off its index.
//!
//! Shared, through `#[path]`, by the `loadtool` example (which writes the
//! scripts) and the `load_sql` integration test (which checks a generated
//! script against the statements the service really executes).

// Each of the two crates that include this file uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use reten_host::store::activities::INSERT_ACTIVITY_SQL;
use reten_host::store::commerces::LOAD_FOR_CREATE_SQL;
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// The statements one create executes in steady state, in order.
pub const CREATE_STATEMENTS: [&str; 2] = [LOAD_FOR_CREATE_SQL, INSERT_ACTIVITY_SQL];

/// One create, ready to replay: the SQL text of each parameter of each
/// statement (`params[s][n - 1]` is `$n` of statement `s`).
#[derive(Clone, Debug)]
pub struct Replay {
    pub params: [Vec<String>; 2],
}

impl Replay {
    /// The statements with their parameters substituted.
    pub fn statements(&self) -> Vec<String> {
        CREATE_STATEMENTS.iter().zip(&self.params).map(|(sql, params)| substitute(sql, params)).collect()
    }
}

/// Reads back what the create of `activity` bound, from the rows it wrote,
/// and turns it into a replay.
pub async fn capture(pool: &PgPool, tenant: Uuid, activity: Uuid) -> Result<Replay, String> {
    let row: Value = sqlx::query_scalar("SELECT to_jsonb(a) FROM activities a WHERE a.tenant_id = $1 AND a.id = $2")
        .bind(tenant)
        .bind(activity)
        .fetch_optional(pool)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("activity {activity} of tenant {tenant} not found"))?;
    let targets: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(t) FROM activity_target_users t WHERE t.tenant_id = $1 AND t.activity_id = $2 \
         ORDER BY t.created_at, t.id",
    )
    .bind(tenant)
    .bind(activity)
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    let attributes: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(v) FROM activity_attributes v WHERE v.tenant_id = $1 AND v.activity_id = $2 \
         ORDER BY v.position",
    )
    .bind(tenant)
    .bind(activity)
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    let input: Option<String> = sqlx::query_scalar(
        "SELECT encode(input, 'hex') FROM decision_inputs WHERE tenant_id = $1 AND activity_id = $2 \
         ORDER BY seq LIMIT 1",
    )
    .bind(tenant)
    .bind(activity)
    .fetch_optional(pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok(replay_of(&row, &targets, &attributes, input.as_deref()))
}

/// The replay of one stored activity (`to_jsonb` of its row, its target
/// users and its attributes).
/// `input_hex` is its stored decision input, hex-encoded, if it kept one.
pub fn replay_of(row: &Value, targets: &[Value], attributes: &[Value], input_hex: Option<&str>) -> Replay {
    // `$20` and `$21` as the service builds them (`TargetJson`,
    // `AttributeJson` in store/activities.rs): exactly the keys its
    // `jsonb_to_recordset` column lists read.
    let pick = |row: &Value, keys: &[&str], position: Option<usize>| -> Value {
        let mut m = Map::new();
        for key in keys {
            let v = match (*key, position) {
                ("position", Some(p)) => Value::from(p),
                _ => row.get(*key).cloned().unwrap_or(Value::Null),
            };
            m.insert((*key).to_owned(), v);
        }
        Value::Object(m)
    };
    let target_json: Vec<Value> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            pick(
                t,
                &[
                    "position",
                    "commerce_user_id",
                    "resolution_status",
                    "resolution_strategy",
                    "lock_reason",
                    "criterion_type",
                    "policy_name",
                    "policy_engine",
                    "policy_version",
                    "resolved_at",
                    "locked_at",
                    "error_message",
                ],
                Some(i),
            )
        })
        .collect();
    let attribute_json: Vec<Value> = attributes
        .iter()
        .map(|a| {
            pick(
                a,
                &[
                    "key",
                    "attribute_key_id",
                    "value",
                    "resolution_status",
                    "resolver_type",
                    "policy_name",
                    "policy_engine",
                    "policy_version",
                    "position",
                    "resolved_at",
                    "error_message",
                ],
                None,
            )
        })
        .collect();
    let col = |k: &str| row.get(k).cloned().unwrap_or(Value::Null);
    let fresh_ids = |n: usize| {
        if n == 0 { "'{}'".to_owned() } else { format!("ARRAY[{}]", vec![NEW_ID; n].join(", ")) }
    };
    let insert = vec![
        text_literal(&col("tenant_id")),                                      // $1 tenant_id
        NEW_ID.to_owned(),                                                    // $2 id
        KEY.to_owned(),                     // $3 idempotency_key: fresh, so every transaction inserts
        text_literal(&col("type")),         // $4
        text_literal(&col("channel")),      // $5
        text_literal(&col("status")),       // $6
        text_literal(&col("reason")),       // $7
        text_literal(&col("commerce_id")),  // $8
        text_literal(&col("scheduled_at")), // $9
        text_literal(&col("suggested_execution_time")), // $10
        text_literal(&col("user_status")),  // $11
        number_literal(&col("score")),      // $12
        text_literal(&col("assignment_reason")), // $13
        json_literal(&col("target_criteria")), // $14
        text_array_literal(&col("attribute_keys")), // $15
        json_literal(&col("caller_attributes")), // $16
        json_literal(&col("resolution_trace")), // $17
        text_literal(&col("created_by")),   // $18
        "now()".to_owned(),                 // $19 created_at = updated_at
        json_literal(&Value::Array(target_json)), // $20 target users
        json_literal(&Value::Array(attribute_json)), // $21 attributes
        NEW_ID.to_owned(),                  // $22 the CREATED event's id
        fresh_ids(targets.len()),           // $23 target user ids
        fresh_ids(attributes.len()),        // $24 attribute ids
        input_hex.map_or_else(|| "NULL".to_owned(), |h| format!("'\\x{h}'")), // $25 decision input
    ];
    let load = vec![
        text_literal(&col("tenant_id")),
        text_literal(&col("commerce_id")),
        KEY.to_owned(), // a key nobody holds yet: the fast path finds nothing
    ];
    Replay { params: [load, insert] }
}

/// The idempotency key of a replayed create: a pgbench variable, a counter in
/// a range of the client's own (see [`script`]).
pub const KEY: &str = ":key";

/// A fresh id, as the service makes them: time-ordered (UUIDv7), from the
/// function the migrations define (`migrations/*_uuid_v7.sql`), so that the
/// replay's inserts land on the same index pages as the service's. It costs
/// Postgres about 1 µs more per id than `gen_random_uuid()` (one id per row a
/// create inserts: four in `run.sh`), where the service sends its ids as
/// parameters.
pub const NEW_ID: &str = "reten_uuid_v7()";

/// A pgbench script that runs one create per transaction, for one of the
/// given replays.
///
/// pgbench prepares each command of a script on each connection the first
/// time that connection runs it, and planning the create's two statements
/// costs about as much as running them (`plan_cache_mode =
/// force_custom_plan` doubles Postgres's CPU per create): a client that
/// picked among all the replays would spend a short run preparing (the service prepares its two statements once
/// per pooled connection). So each client picks uniformly among
/// `per_client` replays of its own — a pseudo-random subset (`hash` of its
/// `client_id`), different in each run — and prepares only those. Subsets
/// overlap at random, so two clients collide on one commerce (and its
/// users' `commerce_user_last_targets` rows) as often as two random
/// requests do.
pub fn script(replays: &[Replay], per_client: usize) -> String {
    let mut out = String::new();
    // The idempotency key: each client counts up in a range of its own, as
    // each load tool connection numbers its keys, so each inserts at one
    // place of the key's index (random keys would each land on a random leaf
    // page). pgbench keeps a client's variables across transactions. run.sh
    // passes `-D n=0 -D keybase=<Unix seconds × 10^9>`: a later run's keys
    // start above an earlier one's, all 19 digits (text order is number order).
    out.push_str("\\set n :n + 1\n\\set key :keybase + :client_id * 10000000 + :n\n");
    let n = replays.len();
    let many = n > 1;
    if many && per_client < n {
        let r = per_client.max(1);
        let _ = writeln!(out, "\\set pick abs(hash(:client_id * {r} + random(0, {})) % {n})", r - 1);
    } else if many {
        let _ = writeln!(out, "\\set pick random(0, {})", n - 1);
    }
    for (i, replay) in replays.iter().enumerate() {
        if many {
            let _ = writeln!(out, "{} :pick = {i}", if i == 0 { "\\if" } else { "\\elif" });
        }
        for statement in replay.statements() {
            out.push_str(&statement);
            out.push_str(";\n");
        }
    }
    if many {
        out.push_str("\\endif\n");
    }
    out
}

/// `sql` with each `$N` replaced by `params[N - 1]`.
pub fn substitute(sql: &str, params: &[String]) -> String {
    let mut out = String::with_capacity(sql.len() + params.iter().map(String::len).sum::<usize>());
    for piece in pieces(sql) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Param(n) => out.push_str(&params[n - 1]),
        }
    }
    out
}

// --- Literals -------------------------------------------------------------
//
// pgbench in `-M prepared` mode turns every `:name` of a command into a
// parameter, inside quotes too, so no literal may hold a colon followed by
// a letter, an underscore or a non-ASCII byte.

/// Whether `s` holds a colon that pgbench could read as a variable (older
/// versions, 12 for one, read `:00` as one too).
fn has_pgbench_variable(s: &str) -> bool {
    s.as_bytes().windows(2).any(|w| w[0] == b':' && (w[1].is_ascii_alphanumeric() || w[1] == b'_' || w[1] >= 0x80))
}

/// A text (or uuid, or timestamp) literal; `NULL` for null.
pub fn text_literal(v: &Value) -> String {
    let s = match v {
        Value::Null => return "NULL".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    quote(&s)
}

fn quote(s: &str) -> String {
    if has_pgbench_variable(s) {
        // An escape string, with the colons spelled `\x3a`.
        let mut out = String::from("E'");
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("''"),
                ':' => out.push_str("\\x3a"),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// An integer literal; `NULL` for null.
fn number_literal(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        _ => "NULL".to_owned(),
    }
}

/// A `text[]` literal from a JSON array of strings; `NULL` for null.
fn text_array_literal(v: &Value) -> String {
    let Value::Array(items) = v else { return "NULL".to_owned() };
    let inner: Vec<String> = items
        .iter()
        .map(|i| {
            let s = i.as_str().map(str::to_owned).unwrap_or_else(|| i.to_string());
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        })
        .collect();
    quote(&format!("{{{}}}", inner.join(",")))
}

/// A JSON literal: compact, with a space after each key's colon and the
/// colons inside strings escaped as `\u003a` (the same JSON to Postgres);
/// `NULL` for null.
pub fn json_literal(v: &Value) -> String {
    if v.is_null() {
        return "NULL".to_owned();
    }
    let compact = v.to_string();
    let mut out = String::with_capacity(compact.len() + 64);
    let (mut in_string, mut escaped) = (false, false);
    for c in compact.chars() {
        if in_string {
            match c {
                _ if escaped => {
                    escaped = false;
                    out.push(c);
                }
                '\\' => {
                    escaped = true;
                    out.push(c);
                }
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                ':' => out.push_str("\\u003a"),
                c => out.push(c),
            }
        } else {
            out.push(c);
            match c {
                '"' => in_string = true,
                ':' => out.push(' '),
                _ => {}
            }
        }
    }
    format!("'{}'", out.replace('\'', "''"))
}

// --- Checking a script against the service's statements -------------------

/// A piece of a statement template: text, or `$N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Param(usize),
}

fn pieces(sql: &str) -> Vec<Piece<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if start < i {
                out.push(Piece::Text(&sql[start..i]));
            }
            out.push(Piece::Param(sql[i + 1..j].parse().unwrap_or(0)));
            start = j;
            i = j;
        } else {
            i += 1;
        }
    }
    if start < b.len() {
        out.push(Piece::Text(&sql[start..]));
    }
    out
}

/// Checks that `statement` is `template` with each `$N` replaced by a
/// parameter expression — a literal (`'…'`, `E'…'`, a number, `NULL`),
/// [`NEW_ID`], `now()`, an `ARRAY[…]` of those, a pgbench
/// `:variable`, each with optional `::type` casts — the same one wherever
/// `$N` repeats, and nothing else changed. Returns the expressions by `N`.
pub fn match_template(template: &str, statement: &str) -> Result<BTreeMap<usize, String>, String> {
    let pieces = pieces(template);
    let mut params: BTreeMap<usize, String> = BTreeMap::new();
    let mut pos = 0;
    for (k, piece) in pieces.iter().enumerate() {
        match *piece {
            Piece::Text(t) => {
                if !statement[pos..].starts_with(t) {
                    let shown: String = statement[pos..].chars().take(80).collect();
                    let wanted: String = t.chars().take(80).collect();
                    return Err(format!("at byte {pos}: expected {wanted:?}, found {shown:?}"));
                }
                pos += t.len();
            }
            Piece::Param(n) => {
                let next = match pieces.get(k + 1) {
                    Some(Piece::Text(t)) => Some(*t),
                    _ => None,
                };
                let ends = expression_ends(statement, pos).map_err(|e| format!("${n} at byte {pos}: {e}"))?;
                let end = ends
                    .into_iter()
                    .find(|&e| match next {
                        Some(t) => statement[e..].starts_with(t),
                        None => e == statement.len(),
                    })
                    .ok_or_else(|| format!("${n} at byte {pos}: the text after it differs from the template"))?;
                let expr = statement[pos..end].to_owned();
                if params.get(&n).is_some_and(|prev| *prev != expr) {
                    return Err(format!("${n} is substituted twice with different expressions"));
                }
                params.insert(n, expr);
                pos = end;
            }
        }
    }
    if pos != statement.len() {
        return Err(format!("unexpected text after the statement: {:?}", &statement[pos..]));
    }
    Ok(params)
}

/// The possible ends of the parameter expression starting at `pos`: after the
/// primary, then after each `::type` cast that follows.
fn expression_ends(s: &str, pos: usize) -> Result<Vec<usize>, String> {
    let mut end = primary_end(s, pos)?;
    let mut ends = vec![end];
    let b = s.as_bytes();
    while s[end..].starts_with("::") {
        let mut j = end + 2;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        if j == end + 2 {
            break;
        }
        if s[j..].starts_with("[]") {
            j += 2;
        }
        end = j;
        ends.push(end);
    }
    Ok(ends)
}

fn primary_end(s: &str, pos: usize) -> Result<usize, String> {
    let rest = &s[pos..];
    let b = rest.as_bytes();
    let word_end = |w: &str| -> Option<usize> {
        let after = rest.strip_prefix(w)?;
        let boundary = after.bytes().next().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == b'_'));
        boundary.then_some(pos + w.len())
    };
    for word in [NEW_ID, "now()", "NULL"] {
        if let Some(e) = word_end(word) {
            return Ok(e);
        }
    }
    match b.first() {
        Some(b'\'') => quoted_end(s, pos, false),
        Some(b'E') if b.get(1) == Some(&b'\'') => quoted_end(s, pos + 1, true),
        Some(b':') => {
            let n = b[1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
            if n == 0 { Err("a lone colon".to_owned()) } else { Ok(pos + 1 + n) }
        }
        Some(c) if c.is_ascii_digit() || *c == b'-' => {
            let n = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            Ok(pos + 1 + n)
        }
        _ if rest.starts_with("ARRAY[") => {
            let mut p = pos + "ARRAY[".len();
            loop {
                let ends = expression_ends(s, p)?;
                p = *ends.last().unwrap_or(&p);
                if s[p..].starts_with(", ") {
                    p += 2;
                } else if s[p..].starts_with(']') {
                    return Ok(p + 1);
                } else {
                    return Err("an ARRAY[…] that does not close".to_owned());
                }
            }
        }
        _ => Err(format!("not a parameter expression: {:?}", rest.chars().take(40).collect::<String>())),
    }
}

/// The end of the quoted literal whose opening quote is at `open`.
fn quoted_end(s: &str, open: usize, backslashes: bool) -> Result<usize, String> {
    let b = s.as_bytes();
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if backslashes => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err("an unterminated literal".to_owned())
}

/// One transaction of a script: the SQL statements one branch runs.
pub type Transaction = Vec<String>;

/// Reads a script written by [`script`] back into the transactions it may
/// run (one per `\if` branch), each a list of SQL statements; the
/// meta-commands must be the `\set` / `\if` / `\elif` / `\endif` that
/// [`script`] writes.
pub fn parse_script(text: &str) -> Result<Vec<Transaction>, String> {
    let mut branches: Vec<Transaction> = Vec::new();
    let mut current: Option<Transaction> = None;
    let mut rest = text;
    let mut branch_no = 0;
    loop {
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        if let Some(meta) = trimmed.strip_prefix('\\') {
            let (line, after) = meta.split_once('\n').unwrap_or((meta, ""));
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["set", "n" | "key" | "pick", ..] if branches.is_empty() && current.is_none() => {}
                ["if" | "elif", ":pick", "=", n] if n.parse() == Ok(branch_no) => {
                    if let Some(done) = current.take() {
                        branches.push(done);
                    }
                    current = Some(Vec::new());
                    branch_no += 1;
                }
                ["endif"] => {
                    if let Some(done) = current.take() {
                        branches.push(done);
                    }
                }
                _ => return Err(format!("unexpected meta-command: \\{line}")),
            }
            rest = after;
            continue;
        }
        // A SQL command: everything up to the first `;` outside quotes,
        // including the whitespace before it (pgbench sends it as is).
        let start = text.len() - rest.len();
        let end = statement_end(text, start)?;
        current.get_or_insert_with(Vec::new).push(text[start..end].to_owned());
        rest = &text[end + 1..];
    }
    if let Some(done) = current.take() {
        branches.push(done);
    }
    Ok(branches)
}

/// The byte offset of the `;` that ends the command starting at `start`.
fn statement_end(text: &str, start: usize) -> Result<usize, String> {
    let b = text.as_bytes();
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                let backslashes = i > 0 && (b[i - 1] == b'E' || b[i - 1] == b'e');
                i = quoted_end(text, i, backslashes)?;
            }
            b';' => return Ok(i),
            _ => i += 1,
        }
    }
    Err("a statement without its closing `;`".to_owned())
}

/// Checks one transaction against the service's create: the same
/// statements, in order, with only parameter substitutions. Returns each
/// statement's parameter expressions.
pub fn check_transaction(statements: &[String]) -> Result<Vec<BTreeMap<usize, String>>, String> {
    if statements.len() != CREATE_STATEMENTS.len() {
        return Err(format!("{} statements, the service runs {}", statements.len(), CREATE_STATEMENTS.len()));
    }
    CREATE_STATEMENTS
        .iter()
        .zip(statements)
        .enumerate()
        .map(|(i, (template, statement))| {
            // pgbench strips nothing but what precedes the first keyword;
            // compare from the template's first non-blank character.
            let template = template.trim_start();
            let statement = statement.trim_start();
            match_template(template, statement).map_err(|e| format!("statement {}: {e}", i + 1))
        })
        .collect()
}
