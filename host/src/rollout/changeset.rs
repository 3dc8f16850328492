//! A changeset: files to write and delete in one layer, as one change.
//!
//! Parsed once at the edge ([`Changeset::parse`]), then trusted: every path
//! is a set path of the layer ([`crate::policy::set::check_path`]), no path
//! is written twice or both written and deleted, and every content is
//! decoded. [`Changeset::apply_to`] applies it to a set in memory, which is
//! how a candidate set (the live set with the change) is built without
//! writing anything.

use base64::Engine as _;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::validation::FieldError;
use crate::policy::admin::MAX_POLICY_BYTES;
use crate::policy::loader::Scope;
use crate::policy::set::{self, FileSet, Writes};

/// The most paths one changeset may touch.
pub const MAX_PATHS: usize = 200;
/// The longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1_000;

/// The body of `POST /api/policies/changes`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "files": [{"path": "criteria/pick.rhai", "content": "fn resolve(input) { [] }"}],
    "delete": ["criteria/pick.wasm"],
    "message": "back to the Rhai version",
    "base_revision": 7,
    "dry_run": false,
    "run_tests": false
}))]
pub struct ChangesetInput {
    /// Files to add or replace.
    #[serde(default)]
    pub files: Vec<FileInput>,
    /// Paths to delete.
    #[serde(default)]
    pub delete: Vec<String>,
    /// Why, for the revision history (at most 1,000 characters).
    #[serde(default)]
    pub message: Option<String>,
    /// The revision the change was made against: refused (409) unless it is
    /// the revision serving.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub base_revision: Option<i64>,
    /// Check and answer, writing nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Also run the set's fixtures (`tests/`); a failing one refuses the change.
    #[serde(default)]
    pub run_tests: bool,
}

/// One file of a changeset: its path and its bytes, as text or base64.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileInput {
    /// Relative to the layer's folder: `tenant.toml`, `criteria/<name>.rhai|wasm`,
    /// `attributes/<name>.rhai|wasm` or `tests/<name>.toml|json`, `<name>` in `[a-z0-9_]+`.
    pub path: String,
    /// The file as text (Rhai, TOML, JSON).
    #[serde(default)]
    pub content: Option<String>,
    /// The file's bytes in standard base64 (a Wasm component).
    #[serde(default)]
    pub content_base64: Option<String>,
}

/// How a change is made, besides what it changes.
#[derive(Clone, Debug, Default)]
pub struct ChangeOptions {
    /// Why, for the revision history.
    pub message: Option<String>,
    /// The revision the change was made against (0: none yet).
    pub base_revision: Option<i64>,
    /// Check and answer, writing nothing.
    pub dry_run: bool,
    /// Also run the set's fixtures.
    pub run_tests: bool,
}

/// A valid change to one layer.
#[derive(Clone, Debug, Default)]
pub struct Changeset {
    /// New bytes by path.
    pub writes: FileSet,
    /// Paths to delete, in the order given.
    pub deletes: Vec<String>,
    /// Every file not in `writes` is deleted: the set becomes `writes`.
    pub replace: bool,
    pub options: ChangeOptions,
}

impl Changeset {
    /// Parses a request, listing every problem by field.
    pub fn parse(scope: Scope, input: ChangesetInput) -> Result<Self, Vec<FieldError>> {
        let mut problems = Vec::new();
        if input.files.len() + input.delete.len() > MAX_PATHS {
            problems.push(FieldError::new("files", format!("a changeset touches at most {MAX_PATHS} paths")));
        }
        let mut writes = FileSet::new();
        for (i, file) in input.files.into_iter().enumerate() {
            if let Some(bytes) = parse_file(scope, i, &file, &input.delete, &writes, &mut problems) {
                writes.insert(file.path, bytes);
            }
        }
        let mut deletes: Vec<String> = Vec::new();
        for (j, path) in input.delete.iter().enumerate() {
            let field = format!("delete[{j}]");
            match set::check_path(scope, path) {
                Err(message) => problems.push(FieldError::new(field, message)),
                Ok(()) if deletes.contains(path) => problems.push(FieldError::new(field, "is deleted twice")),
                Ok(()) => deletes.push(path.clone()),
            }
        }
        if input.message.as_ref().is_some_and(|m| m.chars().count() > MAX_MESSAGE_CHARS) {
            problems.push(FieldError::new("message", format!("must be at most {MAX_MESSAGE_CHARS} characters")));
        }
        if input.base_revision.is_some_and(|n| n < 0) {
            problems.push(FieldError::new("base_revision", "must be a revision number (0 before the first)"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let options = ChangeOptions {
            message: input.message.filter(|m| !m.trim().is_empty()),
            base_revision: input.base_revision,
            dry_run: input.dry_run,
            run_tests: input.run_tests,
        };
        Ok(Self { writes, deletes, replace: false, options })
    }

    /// One file written (a PUT).
    pub fn write_one(path: String, bytes: Vec<u8>) -> Self {
        Self { writes: FileSet::from([(path, bytes)]), ..Self::default() }
    }

    /// One file deleted (a DELETE).
    pub fn delete_one(path: String) -> Self {
        Self { deletes: vec![path], ..Self::default() }
    }

    /// The whole set replaced by `set` (a restore).
    pub fn replace_with(set: FileSet, options: ChangeOptions) -> Self {
        Self { writes: set, deletes: Vec::new(), replace: true, options }
    }

    /// The set `set` becomes with this change.
    pub fn apply_to(&self, set: &FileSet) -> FileSet {
        if self.replace {
            return self.writes.clone();
        }
        let mut out = set.clone();
        for path in &self.deletes {
            out.remove(path);
        }
        out.extend(self.writes.iter().map(|(p, b)| (p.clone(), b.clone())));
        out
    }

    /// The deletions of paths that `set` does not have, by field.
    pub fn missing_deletes(&self, set: &FileSet) -> Vec<FieldError> {
        let missing = self.deletes.iter().enumerate().filter(|(_, path)| !set.contains_key(*path));
        missing.map(|(j, path)| FieldError::new(format!("delete[{j}]"), format!("{path} does not exist"))).collect()
    }
}

/// What must be written to turn `before` into `after`: changed or new
/// files, and deletions. Unchanged files are not touched.
pub fn writes_between(before: &FileSet, after: &FileSet) -> Writes {
    let mut out = Writes::new();
    for (path, bytes) in after {
        if before.get(path) != Some(bytes) {
            out.insert(path.clone(), Some(bytes.clone()));
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        out.insert(path.clone(), None);
    }
    out
}

fn parse_file(
    scope: Scope,
    i: usize,
    file: &FileInput,
    deletes: &[String],
    seen: &FileSet,
    problems: &mut Vec<FieldError>,
) -> Option<Vec<u8>> {
    let field = |name: &str| format!("files[{i}].{name}");
    if let Err(message) = set::check_path(scope, &file.path) {
        problems.push(FieldError::new(field("path"), message));
        return None;
    }
    if deletes.contains(&file.path) {
        problems.push(FieldError::new(field("path"), format!("{} is both written and deleted", file.path)));
        return None;
    }
    if seen.contains_key(&file.path) {
        problems.push(FieldError::new(field("path"), format!("{} is written twice", file.path)));
        return None;
    }
    let bytes = match (&file.content, &file.content_base64) {
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
            Ok(bytes) => bytes,
            Err(e) => {
                problems.push(FieldError::new(field("content_base64"), format!("is not standard base64: {e}")));
                return None;
            }
        },
        _ => {
            problems.push(FieldError::new(format!("files[{i}]"), "needs exactly one of content or content_base64"));
            return None;
        }
    };
    if bytes.len() > MAX_POLICY_BYTES {
        problems.push(FieldError::new(field("path"), format!("is larger than {} MiB", MAX_POLICY_BYTES >> 20)));
        return None;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;

    fn file(path: &str, content: &str) -> FileInput {
        FileInput { path: path.into(), content: Some(content.into()), content_base64: None }
    }

    #[test]
    fn every_bad_path_and_content_is_listed_by_field() {
        let input = ChangesetInput {
            files: vec![
                file("criteria/ok.rhai", "x"),
                file("../etc/passwd", "x"),
                file("criteria/gone.rhai", "x"),
                FileInput { path: "criteria/w.wasm".into(), content: None, content_base64: Some("%%%".into()) },
                FileInput { path: "criteria/n.rhai".into(), content: None, content_base64: None },
                file("criteria/ok.rhai", "y"),
            ],
            delete: vec!["criteria/gone.rhai".into(), "scripts/x.sh".into()],
            ..Default::default()
        };
        let fields: Vec<String> =
            Changeset::parse(Scope::Tenant(TenantId::new()), input).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["files[1].path", "files[2].path", "files[3].content_base64", "files[4]", "files[5].path", "delete[1]"]
        );
    }

    #[test]
    fn an_engine_swap_applies_as_one_set() {
        let input = ChangesetInput {
            files: vec![FileInput {
                path: "criteria/x.wasm".into(),
                content: None,
                content_base64: Some("AGFzbQ==".into()),
            }],
            delete: vec!["criteria/x.rhai".into()],
            ..Default::default()
        };
        let change = Changeset::parse(Scope::Tenant(TenantId::new()), input).unwrap();
        let before = FileSet::from([("criteria/x.rhai".into(), b"r".to_vec()), ("tenant.toml".into(), b"t".to_vec())]);
        let after = change.apply_to(&before);
        assert_eq!(after.keys().collect::<Vec<_>>(), ["criteria/x.wasm", "tenant.toml"]);
        assert_eq!(after["criteria/x.wasm"], b"\0asm");
        let writes = writes_between(&before, &after);
        assert_eq!(writes.len(), 2, "tenant.toml is not touched: {writes:?}");
        assert_eq!(writes["criteria/x.rhai"], None);
    }
}
