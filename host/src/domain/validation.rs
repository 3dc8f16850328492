//! Field-by-field reading of JSON request bodies that reports every bad field,
//! not only the first one that serde would stop at.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// One bad field: its path (`target_criteria[2].type`) and what is wrong;
/// for a file, the line and column too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"field": "target_criteria[0].type", "message": "names no criterion this tenant has; expected ROLE_MATCH"}))]
pub struct FieldError {
    /// The field's path in the request (`target_criteria[2].type`), a query
    /// parameter, a header, or a policy file's path.
    pub field: String,
    pub message: String,
    /// For a file: the line of the error (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32, minimum = 1)]
    pub line: Option<usize>,
    /// For a file: the column of the error (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32, minimum = 1)]
    pub column: Option<usize>,
}

impl FieldError {
    /// A bad field without a position.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into(), line: None, column: None }
    }
}

/// The bad fields found so far.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// Records one bad field.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Whether nothing was wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was wrong, else every bad field.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() { Ok(value) } else { Err(self.0) }
    }

    /// The bad fields.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

/// Reads the fields of one JSON object, recording what is wrong under `prefix`.
/// Fields never asked for are reported as unknown by [`ObjectReader::finish`].
pub struct ObjectReader<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
    seen: BTreeSet<&'static str>,
}

impl<'a> ObjectReader<'a> {
    /// Starts reading `map`, whose fields are reported as `prefix.field`.
    pub fn new(map: &'a Map<String, Value>, prefix: impl Into<String>) -> Self {
        Self { map, prefix: prefix.into(), seen: BTreeSet::new() }
    }

    /// The path of one field of this object.
    pub fn path(&self, field: &str) -> String {
        if self.prefix.is_empty() { field.to_owned() } else { format!("{}.{field}", self.prefix) }
    }

    /// The raw value of a field; JSON `null` reads as absent.
    pub fn raw(&mut self, field: &'static str) -> Option<&'a Value> {
        self.seen.insert(field);
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// A required field; records "is required" when it is absent or null.
    pub fn required(&mut self, field: &'static str, errors: &mut Errors) -> Option<&'a Value> {
        let value = self.raw(field);
        if value.is_none() {
            errors.add(self.path(field), "is required");
        }
        value
    }

    /// A string field, checked for length (in characters) and control characters.
    pub fn string(&mut self, field: &'static str, rule: StringRule, errors: &mut Errors) -> Option<String> {
        let value = if rule.required { self.required(field, errors)? } else { self.raw(field)? };
        let path = self.path(field);
        let Some(text) = value.as_str() else {
            errors.add(path, "must be a string");
            return None;
        };
        let chars = text.chars().count();
        if rule.non_blank && text.trim().is_empty() {
            errors.add(path, "must not be empty");
            return None;
        }
        if chars > rule.max_chars {
            errors.add(path, format!("must be at most {} characters (got {chars})", rule.max_chars));
            return None;
        }
        if rule.no_control && text.chars().any(char::is_control) {
            errors.add(path, "must not contain control characters");
            return None;
        }
        Some(text.to_owned())
    }

    /// A string field holding one of an enum's names.
    pub fn enumeration<E: std::str::FromStr<Err = String>>(
        &mut self,
        field: &'static str,
        required: bool,
        errors: &mut Errors,
    ) -> Option<E> {
        let value = if required { self.required(field, errors)? } else { self.raw(field)? };
        let path = self.path(field);
        match value.as_str().map(str::parse::<E>) {
            Some(Ok(v)) => Some(v),
            Some(Err(msg)) => {
                errors.add(path, msg);
                None
            }
            None => {
                errors.add(path, "must be a string");
                None
            }
        }
    }

    /// A UUID field.
    pub fn uuid(&mut self, field: &'static str, required: bool, errors: &mut Errors) -> Option<Uuid> {
        let value = if required { self.required(field, errors)? } else { self.raw(field)? };
        match value.as_str().map(Uuid::parse_str) {
            Some(Ok(id)) => Some(id),
            _ => {
                errors.add(self.path(field), "must be a UUID");
                None
            }
        }
    }

    /// An RFC 3339 timestamp field with an offset.
    pub fn timestamp(&mut self, field: &'static str, required: bool, errors: &mut Errors) -> Option<DateTime<Utc>> {
        let value = if required { self.required(field, errors)? } else { self.raw(field)? };
        let parsed = value
            .as_str()
            .ok_or_else(|| "must be an RFC 3339 timestamp string".to_owned())
            .and_then(super::time::parse);
        match parsed {
            Ok(ts) => Some(ts),
            Err(msg) => {
                errors.add(self.path(field), msg);
                None
            }
        }
    }

    /// An integer field that fits in 32 bits.
    pub fn i32(&mut self, field: &'static str, errors: &mut Errors) -> Option<i32> {
        let value = self.raw(field)?;
        match value.as_i64().map(i32::try_from) {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                errors.add(self.path(field), "must be a 32-bit integer (-2147483648 to 2147483647)");
                None
            }
            None => {
                errors.add(self.path(field), "must be an integer");
                None
            }
        }
    }

    /// A boolean field.
    pub fn bool(&mut self, field: &'static str, errors: &mut Errors) -> Option<bool> {
        let value = self.raw(field)?;
        match value.as_bool() {
            Some(b) => Some(b),
            None => {
                errors.add(self.path(field), "must be true or false");
                None
            }
        }
    }

    /// A JSON object field.
    pub fn object(&mut self, field: &'static str, errors: &mut Errors) -> Option<&'a Map<String, Value>> {
        let value = self.raw(field)?;
        match value.as_object() {
            Some(map) => Some(map),
            None => {
                errors.add(self.path(field), "must be an object");
                None
            }
        }
    }

    /// A JSON array field with at most `max` items.
    pub fn array(&mut self, field: &'static str, max: usize, errors: &mut Errors) -> Option<&'a [Value]> {
        let value = self.raw(field)?;
        match value.as_array() {
            Some(items) if items.len() > max => {
                errors.add(self.path(field), format!("must have at most {max} items (got {})", items.len()));
                None
            }
            Some(items) => Some(items.as_slice()),
            None => {
                errors.add(self.path(field), "must be an array");
                None
            }
        }
    }

    /// Reports every field of the object that was never read.
    pub fn finish(self, errors: &mut Errors) {
        for key in self.map.keys() {
            if !self.seen.contains(key.as_str()) {
                errors.add(self.path(key), "is not a known field");
            }
        }
    }
}

/// The rules for a string field.
#[derive(Clone, Copy, Debug)]
pub struct StringRule {
    pub required: bool,
    pub non_blank: bool,
    pub max_chars: usize,
    pub no_control: bool,
}

impl StringRule {
    /// A required, non-blank string of at most `max_chars` characters.
    pub const fn required(max_chars: usize) -> Self {
        Self { required: true, non_blank: true, max_chars, no_control: false }
    }

    /// An optional string of at most `max_chars` characters.
    pub const fn optional(max_chars: usize) -> Self {
        Self { required: false, non_blank: false, max_chars, no_control: false }
    }

    /// Also refuses control characters.
    pub const fn no_control(mut self) -> Self {
        self.no_control = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let body = json!({"a": 5, "b": "", "zzz": true});
        let mut errors = Errors::default();
        let mut r = ObjectReader::new(body.as_object().unwrap(), "item[0]");
        r.string("a", StringRule::required(10), &mut errors);
        r.string("b", StringRule::required(10), &mut errors);
        r.string("c", StringRule::required(10), &mut errors);
        r.finish(&mut errors);
        let fields: Vec<String> = errors.into_vec().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["item[0].a", "item[0].b", "item[0].c", "item[0].zzz"]);
    }

    #[test]
    fn integers_outside_32_bits_are_refused() {
        let body = json!({"score": 3_000_000_000_i64});
        let mut errors = Errors::default();
        let mut r = ObjectReader::new(body.as_object().unwrap(), "");
        assert_eq!(r.i32("score", &mut errors), None);
        assert_eq!(errors.into_vec()[0].field, "score");
    }
}
