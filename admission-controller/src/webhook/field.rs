//! Field errors rendered exactly as Kubernetes' `field.Error` / `field.ErrorList` and `apierrors.NewInvalid` render
//! them, so that a user (or a tool matching on text) sees the same rejection from us as from upstream JobSet.
//!
//! The rendering rules, from `k8s.io/apimachinery` (`pkg/util/validation/field`, `pkg/api/errors`):
//! - one error prints as `<field>: <body>`; a nil path prints as `<nil>`;
//! - the body is the type's text (`Invalid value`, `Required value`, `Forbidden`, `Too long`, `Internal error`, …),
//!   followed by `: <bad value>` except for Required / Forbidden / TooLong / Internal, then `: <detail>` if any;
//! - a string bad value is Go-quoted (`%q`), numbers and booleans are printed bare, a nil pointer prints as the
//!   quoted string `"null"`;
//! - a list becomes `<Kind>.<group> "<name>" is invalid: <errors>`, where several distinct errors are joined as
//!   `[e1, e2]` (duplicate texts are dropped from the message, but every error stays a status cause).

use std::fmt;

use kube::core::Status;
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};

/// `field.ErrorType`: the machine-readable cause type and its human text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Internal,
}

impl ErrorType {
    /// The `StatusCause.reason` (`metav1.CauseType`) of this error type.
    pub fn cause_type(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Internal => "InternalError",
        }
    }

    /// The canonical text that starts the error body.
    pub fn text(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::Required => "Required value",
            Self::Duplicate => "Duplicate value",
            Self::Invalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Internal => "Internal error",
        }
    }

    /// Types whose body never shows the bad value.
    fn omits_value(self) -> bool {
        matches!(self, Self::Required | Self::Forbidden | Self::TooLong | Self::Internal)
    }
}

/// The offending value, as Go's `fmt` would print it inside an error body.
#[derive(Clone, Debug, PartialEq)]
pub enum BadValue {
    /// A Go `string`: printed quoted, `%q`.
    Str(String),
    /// A Go integer: printed bare.
    Int(i64),
    Bool(bool),
    /// A nil pointer: Go prints the quoted string `"null"`.
    Null,
    /// A composite value (struct, slice). Go prints it with `%#v`, which includes pointer addresses and cannot be
    /// reproduced; we print its JSON instead.
    Json(String),
    /// No value (Required, Forbidden, TooLong, Internal).
    None,
}

impl BadValue {
    pub fn opt_int(v: Option<i32>) -> Self {
        v.map_or(Self::Null, |v| Self::Int(v.into()))
    }

    pub fn opt_str(v: Option<&str>) -> Self {
        v.map_or(Self::Null, |v| Self::Str(v.to_owned()))
    }

    /// JSON of a composite value; serialisation of our own types cannot fail, but if it did the value is simply
    /// left out rather than failing the admission.
    pub fn json<T: serde::Serialize>(v: &T) -> Self {
        serde_json::to_string(v).map_or(Self::None, Self::Json)
    }
}

/// A field path, printed like `field.Path`: `spec.replicatedJobs[0].groupName`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path(Option<String>);

impl Path {
    pub fn new(name: &str) -> Self {
        Self(Some(name.to_owned()))
    }

    /// The nil path of errors not tied to a field; printed `<nil>`.
    pub fn nil() -> Self {
        Self(None)
    }

    #[must_use]
    pub fn child(&self, name: &str) -> Self {
        match &self.0 {
            Some(p) => Self(Some(format!("{p}.{name}"))),
            None => Self::new(name),
        }
    }

    #[must_use]
    pub fn index(&self, i: usize) -> Self {
        Self(Some(format!("{}[{i}]", self.0.as_deref().unwrap_or(""))))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("<nil>"))
    }
}

/// One `field.Error`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub error_type: ErrorType,
    pub field: String,
    pub bad_value: BadValue,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(path: &Path, value: BadValue, detail: impl Into<String>) -> Self {
        Self { error_type: ErrorType::Invalid, field: path.to_string(), bad_value: value, detail: detail.into() }
    }

    pub fn required(path: &Path, detail: impl Into<String>) -> Self {
        Self {
            error_type: ErrorType::Required,
            field: path.to_string(),
            bad_value: BadValue::None,
            detail: detail.into(),
        }
    }

    pub fn forbidden(path: &Path, detail: impl Into<String>) -> Self {
        Self {
            error_type: ErrorType::Forbidden,
            field: path.to_string(),
            bad_value: BadValue::None,
            detail: detail.into(),
        }
    }

    /// `field.TooLongMaxLength`, whose detail is `may not be longer than <n>`.
    pub fn too_long_max_length(path: &Path, max: usize) -> Self {
        Self {
            error_type: ErrorType::TooLong,
            field: path.to_string(),
            bad_value: BadValue::None,
            detail: format!("may not be longer than {max}"),
        }
    }

    /// `field.InternalError(path, err)`: upstream wraps every plain (non-field) error this way, at the nil path.
    pub fn internal(path: &Path, detail: impl Into<String>) -> Self {
        Self {
            error_type: ErrorType::Internal,
            field: path.to_string(),
            bad_value: BadValue::None,
            detail: detail.into(),
        }
    }

    /// `ErrorBody()`: the message without the field name, which is also the status cause's message.
    pub fn body(&self) -> String {
        let mut s = self.error_type.text().to_owned();
        if !self.error_type.omits_value() {
            match &self.bad_value {
                BadValue::Str(v) => {
                    s.push_str(": ");
                    s.push_str(&go_quote(v));
                }
                BadValue::Int(v) => s.push_str(&format!(": {v}")),
                BadValue::Bool(v) => s.push_str(&format!(": {v}")),
                BadValue::Null => s.push_str(": \"null\""),
                BadValue::Json(v) => {
                    s.push_str(": ");
                    s.push_str(v);
                }
                BadValue::None => {}
            }
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// An ordered `field.ErrorList`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }

    pub fn extend(&mut self, other: FieldErrors) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.0.iter()
    }

    /// `ErrorList.ToAggregate().Error()`: distinct messages in order, bracketed when there are several.
    pub fn aggregate_message(&self) -> String {
        let mut seen: Vec<String> = Vec::new();
        for e in &self.0 {
            let msg = e.to_string();
            if !seen.contains(&msg) {
                seen.push(msg);
            }
        }
        match seen.len() {
            0 => String::new(),
            1 => seen.remove(0),
            _ => format!("[{}]", seen.join(", ")),
        }
    }

    /// `apierrors.NewInvalid(groupKind, name, errs)`: HTTP 422, reason `Invalid`, one cause per error.
    pub fn to_invalid_status(&self, group: &str, kind: &str, name: &str) -> Status {
        let qualified = if group.is_empty() { kind.to_owned() } else { format!("{kind}.{group}") };
        let message = if self.is_empty() {
            format!("{qualified} {} is invalid", go_quote(name))
        } else {
            format!("{qualified} {} is invalid: {}", go_quote(name), self.aggregate_message())
        };
        let causes = self
            .0
            .iter()
            .map(|e| StatusCause {
                reason: e.error_type.cause_type().to_owned(),
                message: e.body(),
                field: e.field.clone(),
            })
            .collect();
        Status {
            status: Some(StatusSummary::Failure),
            code: 422,
            message,
            metadata: None,
            reason: "Invalid".to_owned(),
            details: Some(StatusDetails {
                name: name.to_owned(),
                group: group.to_owned(),
                kind: kind.to_owned(),
                uid: String::new(),
                causes,
                retry_after_seconds: 0,
            }),
        }
    }
}

impl IntoIterator for FieldErrors {
    type Item = FieldError;
    type IntoIter = std::vec::IntoIter<FieldError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Go's `strconv.Quote` (what `%q` prints for a string): printable characters as they are, the usual
/// backslash escapes, `\xNN` for other ASCII control bytes and `\uNNNN` / `\UNNNNNNNN` for other unprintables.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if go_printable(c) => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
/// Rust has no general-category tables in std, so the format characters Go rejects are listed explicitly.
fn go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c, '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}' | '\u{180e}'
        | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}'
        | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e000}'..='\u{f8ff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_field_path() {
        let p = Path::new("spec").child("replicatedJobs").index(3).child("groupName");
        assert_eq!(p.to_string(), "spec.replicatedJobs[3].groupName");
        assert_eq!(Path::nil().to_string(), "<nil>");
        assert_eq!(
            Path::new("spec").child("volumeClaimPolicies").index(0).child("template").index(1).to_string(),
            "spec.volumeClaimPolicies[0].template[1]"
        );
    }

    #[test]
    fn bodies_follow_the_go_rendering() {
        let p = Path::new("spec").child("x");
        assert_eq!(
            FieldError::invalid(&p, BadValue::Str("a\"b".into()), "bad").to_string(),
            r#"spec.x: Invalid value: "a\"b": bad"#
        );
        assert_eq!(FieldError::invalid(&p, BadValue::Int(-1), "bad").to_string(), "spec.x: Invalid value: -1: bad");
        assert_eq!(FieldError::invalid(&p, BadValue::Null, "bad").to_string(), r#"spec.x: Invalid value: "null": bad"#);
        assert_eq!(FieldError::required(&p, "").to_string(), "spec.x: Required value");
        assert_eq!(FieldError::forbidden(&p, "no").to_string(), "spec.x: Forbidden: no");
        assert_eq!(FieldError::too_long_max_length(&p, 63).to_string(), "spec.x: Too long: may not be longer than 63");
        assert_eq!(FieldError::internal(&Path::nil(), "boom").to_string(), "<nil>: Internal error: boom");
    }

    #[test]
    fn go_quote_matches_strconv_quote() {
        assert_eq!(go_quote("plain"), r#""plain""#);
        assert_eq!(go_quote("tab\there"), r#""tab\there""#);
        assert_eq!(go_quote("\u{1}"), r#""\x01""#);
        assert_eq!(go_quote("é"), "\"é\"");
        assert_eq!(go_quote("\u{200b}"), r#""\u200b""#);
        assert_eq!(go_quote("back\\slash"), r#""back\\slash""#);
    }

    #[test]
    fn aggregate_dedups_messages_and_brackets_several() {
        let p = Path::new("spec");
        let mut errs = FieldErrors::default();
        errs.push(FieldError::internal(&Path::nil(), "a"));
        assert_eq!(errs.aggregate_message(), "<nil>: Internal error: a");
        errs.push(FieldError::internal(&Path::nil(), "a"));
        assert_eq!(errs.aggregate_message(), "<nil>: Internal error: a");
        errs.push(FieldError::forbidden(&p, "b"));
        assert_eq!(errs.aggregate_message(), "[<nil>: Internal error: a, spec: Forbidden: b]");
        let status = errs.to_invalid_status("jobset.x-k8s.io", "JobSet", "js");
        assert_eq!(status.code, 422);
        assert_eq!(status.reason, "Invalid");
        assert_eq!(
            status.message,
            r#"JobSet.jobset.x-k8s.io "js" is invalid: [<nil>: Internal error: a, spec: Forbidden: b]"#
        );
        let details = status.details.expect("details");
        assert_eq!(details.causes.len(), 3, "every error stays a cause, duplicates included");
        assert_eq!(details.causes[2].reason, "FieldValueForbidden");
        assert_eq!(details.causes[2].message, "Forbidden: b");
        assert_eq!(details.causes[2].field, "spec");
    }
}
