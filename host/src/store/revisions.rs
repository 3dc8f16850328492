//! Policy revisions: the numbered history of each layer's set of files, with
//! every content stored once per (tenant, sha256). The global layer is kept
//! under the nil UUID.
//!
//! Invariant: revisions of one tenant are numbered and compared under that
//! tenant's advisory lock ([`lock`]), held until the transaction ends, so
//! two writers — two replicas seeing one file edit, or an API change and the
//! watcher seeing its files — never take the same number or record one set
//! twice.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::domain::TenantId;
use crate::domain::revision::{ChangedFile, FileChange, Manifest, RevisionSource};
use crate::store::Page;

/// The first key of the advisory locks taken here ("RTNP"), so they never
/// collide with another use of advisory locks; the second is the tenant's.
const LOCK_CLASS: i32 = 0x5254_4e50;

/// The Postgres channel every replica listens on for policy changes.
pub const CHANNEL: &str = "reten_policies";

/// Takes the tenant's revision lock until the transaction ends.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant))]
pub async fn lock(conn: &mut PgConnection, tenant: TenantId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(LOCK_CLASS)
        .bind(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the tenant's revision lock in shared mode until the transaction
/// ends: held by every tenant change on the global layer's key, so that a
/// global change (which takes it exclusively) and a tenant change are never
/// checked against each other's old sets at once.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant))]
pub async fn lock_shared(conn: &mut PgConnection, tenant: TenantId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, hashtext($2::text))")
        .bind(LOCK_CLASS)
        .bind(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// The latest revision of a tenant: its number and set digest.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Head {
    pub revision: i64,
    /// The digest of the revision's whole set.
    pub set_sha256: String,
}

/// The latest revision, if any.
pub async fn head(conn: &mut PgConnection, tenant: TenantId) -> Result<Option<Head>, sqlx::Error> {
    sqlx::query_as::<_, Head>(
        "SELECT revision, set_sha256 FROM policy_revisions WHERE tenant_id = $1 ORDER BY revision DESC LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await
}

/// The whole set of a revision.
pub async fn manifest(conn: &mut PgConnection, tenant: TenantId, revision: i64) -> Result<Manifest, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT path, sha256 FROM policy_revision_files WHERE tenant_id = $1 AND revision = $2 AND in_set",
    )
    .bind(tenant)
    .bind(revision)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Which of these contents are stored already.
pub async fn stored(conn: &mut PgConnection, tenant: TenantId, shas: &[String]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT sha256 FROM policy_contents WHERE tenant_id = $1 AND sha256 = ANY($2)")
        .bind(tenant)
        .bind(shas)
        .fetch_all(conn)
        .await
}

/// A revision to record.
#[derive(Debug)]
pub struct NewRevision<'a> {
    pub tenant: TenantId,
    pub author: &'a str,
    pub source: RevisionSource,
    pub message: Option<&'a str>,
    /// The whole set, and its digest.
    pub set: &'a Manifest,
    pub set_sha256: &'a str,
    /// What changed against the previous revision.
    pub changes: &'a [ChangedFile],
    /// The contents not stored yet, by sha256.
    pub contents: &'a [(String, Vec<u8>)],
}

/// Records a revision with the next number; the caller holds [`lock`].
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %r.tenant))]
pub async fn insert(conn: &mut PgConnection, r: &NewRevision<'_>) -> Result<i64, sqlx::Error> {
    let (shas, bytes): (Vec<&str>, Vec<&[u8]>) = r.contents.iter().map(|(s, b)| (s.as_str(), b.as_slice())).unzip();
    sqlx::query(
        "INSERT INTO policy_contents (tenant_id, sha256, content) \
         SELECT $1, s, c FROM unnest($2::text[], $3::bytea[]) AS t(s, c) ON CONFLICT DO NOTHING",
    )
    .bind(r.tenant)
    .bind(&shas)
    .bind(&bytes)
    .execute(&mut *conn)
    .await?;
    let revision: i64 = sqlx::query_scalar(
        "INSERT INTO policy_revisions (tenant_id, revision, author, source, message, set_sha256) \
         SELECT $1, coalesce(max(revision), 0) + 1, $2, $3, $4, $5 FROM policy_revisions WHERE tenant_id = $1 \
         RETURNING revision",
    )
    .bind(r.tenant)
    .bind(r.author)
    .bind(r.source.as_str())
    .bind(r.message)
    .bind(r.set_sha256)
    .fetch_one(&mut *conn)
    .await?;
    let mut paths = Vec::new();
    let mut file_shas = Vec::new();
    let mut in_set = Vec::new();
    let mut changes: Vec<Option<&str>> = Vec::new();
    for (path, sha) in r.set {
        paths.push(path.as_str());
        file_shas.push(sha.as_str());
        in_set.push(true);
        changes.push(r.changes.iter().find(|c| &c.path == path).map(|c| c.change.as_str()));
    }
    for deleted in r.changes.iter().filter(|c| c.change == FileChange::Deleted) {
        paths.push(deleted.path.as_str());
        file_shas.push(deleted.sha256.as_str());
        in_set.push(false);
        changes.push(Some(FileChange::Deleted.as_str()));
    }
    sqlx::query(
        "INSERT INTO policy_revision_files (tenant_id, revision, path, sha256, in_set, change) \
         SELECT $1, $2, p, s, i, c FROM unnest($3::text[], $4::text[], $5::bool[], $6::text[]) AS t(p, s, i, c)",
    )
    .bind(r.tenant)
    .bind(revision)
    .bind(&paths)
    .bind(&file_shas)
    .bind(&in_set)
    .bind(&changes)
    .execute(&mut *conn)
    .await?;
    Ok(revision)
}

/// Tells every replica that a layer changed, when the transaction commits.
pub async fn notify(conn: &mut PgConnection, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(conn).await?;
    Ok(())
}

/// A stored revision, without its files.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RevisionRow {
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    /// The JWT `sub`, `api-key:<id>`, or `filesystem`.
    pub author: String,
    /// A [`RevisionSource`] name.
    pub source: String,
    pub message: Option<String>,
    pub set_sha256: String,
}

const COLUMNS: &str = "revision, created_at, author, source, message, set_sha256";

/// One page of a tenant's revisions, newest first, and how many there are.
pub async fn list(pool: &PgPool, tenant: TenantId, page: Page) -> Result<(Vec<RevisionRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as::<_, RevisionRow>(&format!(
        "SELECT {COLUMNS} FROM policy_revisions WHERE tenant_id = $1 ORDER BY revision DESC LIMIT $2 OFFSET $3"
    ))
    .bind(tenant)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM policy_revisions WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

/// One revision of a tenant.
pub async fn get(pool: &PgPool, tenant: TenantId, revision: i64) -> Result<Option<RevisionRow>, sqlx::Error> {
    sqlx::query_as::<_, RevisionRow>(&format!(
        "SELECT {COLUMNS} FROM policy_revisions WHERE tenant_id = $1 AND revision = $2"
    ))
    .bind(tenant)
    .bind(revision)
    .fetch_optional(pool)
    .await
}

/// What changed in each of these revisions, by revision.
pub async fn changes(
    pool: &PgPool,
    tenant: TenantId,
    revisions: &[i64],
) -> Result<Vec<(i64, ChangedFile)>, sqlx::Error> {
    let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT revision, path, sha256, change FROM policy_revision_files \
         WHERE tenant_id = $1 AND revision = ANY($2) AND change IS NOT NULL ORDER BY revision, path",
    )
    .bind(tenant)
    .bind(revisions)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(n, path, sha256, change)| {
            FileChange::parse(&change).map(|change| (n, ChangedFile { path, sha256, change }))
        })
        .collect())
}

/// A revision's whole set, with each file's bytes.
pub async fn contents(
    pool: &PgPool,
    tenant: TenantId,
    revision: i64,
) -> Result<Vec<(String, String, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT f.path, f.sha256, c.content FROM policy_revision_files f \
         JOIN policy_contents c ON c.tenant_id = f.tenant_id AND c.sha256 = f.sha256 \
         WHERE f.tenant_id = $1 AND f.revision = $2 AND f.in_set ORDER BY f.path",
    )
    .bind(tenant)
    .bind(revision)
    .fetch_all(pool)
    .await
}

/// The newest revision whose set has this digest: the revision a set is.
pub async fn newest_with_set(pool: &PgPool, tenant: TenantId, set_sha256: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT revision FROM policy_revisions WHERE tenant_id = $1 AND set_sha256 = $2 \
         ORDER BY revision DESC LIMIT 1",
    )
    .bind(tenant)
    .bind(set_sha256)
    .fetch_optional(pool)
    .await
}
