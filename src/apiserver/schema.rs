//! CRD schema engine: structural checks, pruning, defaulting and validation of custom resources against a CRD's `openAPIV3Schema`, with the real kube-apiserver's error texts.
//!
//! Everything here is a pure function over `serde_json::Value`. The behaviour follows
//! k8s.io/apiextensions-apiserver (structural schema rules, pruning, defaulting) and
//! k8s.io/kube-openapi `validate` (value validation) as shipped with Kubernetes 1.33, so that
//! kubectl and kube-rs see the same causes and messages a real cluster would return.
//!
//! The server is expected to call, for every write of a custom resource:
//! [`prune`] (which also drops nulls the schema does not allow), then [`apply_defaults`], then
//! [`validate`]. [`structural_errors`] is for accepting or rejecting the CRD itself.

use std::fmt;

use regex::Regex;
use serde_json::{Map, Value};

/// The schema path the real server reports for a CRD whose versions share one schema (the
/// internal API hoists identical per-version schemas to `spec.validation`).
pub const DEFAULT_SCHEMA_PATH: &str = "spec.validation.openAPIV3Schema";

/// Fields every resource root (and every `x-kubernetes-embedded-resource`) owns outside its schema.
const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// The `in` part of kube-openapi messages ("spec.x in body must be ...").
const IN: &str = "body";

/// Names of the types a CRD schema may use, sorted as the real server lists them.
const SCHEMA_TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

/// String formats the 1.33 apiserver keeps (with '-' removed); any other format is ignored.
const STRING_FORMATS: [&str; 24] = [
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
];

/// Keys a structural schema node understands; used to decide whether a root `metadata` schema
/// says anything beyond `type`, `default` and `name`/`generateName`.
const STRUCTURAL_KEYS: [&str; 33] = [
    "items",
    "properties",
    "additionalProperties",
    "description",
    "title",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
    "format",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
];

/// The largest integer a float64 holds exactly, as swag's `IsFloat64AJSONInteger` bounds it.
const MAX_JSON_FLOAT: f64 = 9_007_199_254_740_991.0;

/// The floats that parse as an int64: [-2^63, 2^63).
const I64_AS_F64: std::ops::Range<f64> = -9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0;

// ---------------------------------------------------------------------------------------------
// Causes
// ---------------------------------------------------------------------------------------------

/// One validation failure, shaped like a Kubernetes `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: CauseReason,
    /// The dotted field path, e.g. `spec.qualifiers.cpu[0].manufacturer`; `<nil>` for failures
    /// the real server reports without a path (anyOf/oneOf/allOf/not and range checks).
    pub field: String,
    /// The message without the field, e.g. `Required value`.
    pub message: String,
}

impl fmt::Display for Cause {
    /// The `field: message` form the real server joins into a Status message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The `reason` of a cause (apimachinery's `field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseReason {
    Invalid,
    /// A value of the wrong JSON type. Kubernetes 1.24+ reports type mismatches with this
    /// reason, not `FieldValueInvalid`; the message still reads "Invalid value: ...".
    TypeInvalid,
    Required,
    NotSupported,
    TooLong,
    TooMany,
    Forbidden,
}

impl CauseReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Invalid => "FieldValueInvalid",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::Required => "FieldValueRequired",
            Self::NotSupported => "FieldValueNotSupported",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Forbidden => "FieldValueForbidden",
        }
    }

    /// The words that open a message of this reason.
    fn text(self) -> &'static str {
        match self {
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::Required => "Required value",
            Self::NotSupported => "Unsupported value",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Forbidden => "Forbidden",
        }
    }
}

/// Builds a cause the way apimachinery's `field.Error.ErrorBody` renders it: the reason's words,
/// then the offending value (never for Required, Forbidden and TooLong), then the detail.
fn cause(
    reason: CauseReason,
    field: impl Into<String>,
    value: Option<&Value>,
    detail: &str,
) -> Cause {
    let mut message = reason.text().to_owned();
    let shows_value = !matches!(
        reason,
        CauseReason::Required | CauseReason::Forbidden | CauseReason::TooLong
    );
    if let (true, Some(value)) = (shows_value, value) {
        message.push_str(": ");
        message.push_str(&render_value(value));
    }
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    Cause {
        reason,
        field: field.into(),
        message,
    }
}

/// Renders a bad value as the 1.33 apiserver does: numbers and booleans bare, strings quoted,
/// null as the quoted word. Objects and arrays are shown as JSON (Go 1.33 prints Go syntax there,
/// newer releases print JSON; JSON is the one a user can read).
fn render_value(value: &Value) -> String {
    match value {
        Value::Null => go_quote("null"),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => go_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => go_quote(s),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Schema access helpers
// ---------------------------------------------------------------------------------------------

fn text<'a>(s: &'a Value, key: &str) -> &'a str {
    s.get(key).and_then(Value::as_str).unwrap_or("")
}

fn flag(s: &Value, key: &str) -> bool {
    s.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn list<'a>(s: &'a Value, key: &str) -> &'a [Value] {
    s.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn properties(s: &Value) -> Option<&Map<String, Value>> {
    s.get("properties").and_then(Value::as_object)
}

fn property<'a>(s: &'a Value, key: &str) -> Option<&'a Value> {
    properties(s).and_then(|p| p.get(key))
}

/// The `items` schema, when it is a single schema (the only form CRDs allow).
fn items(s: &Value) -> Option<&Value> {
    s.get("items").filter(|v| v.is_object())
}

/// A `default` that is set (`default: null` counts as unset, as in the real server).
fn default_of(s: &Value) -> Option<&Value> {
    s.get("default").filter(|v| !v.is_null())
}

fn int_field(s: &Value, key: &str) -> Option<i64> {
    let v = s.get(key)?;
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

fn num_field(s: &Value, key: &str) -> Option<f64> {
    s.get(key).and_then(Value::as_f64)
}

/// What `additionalProperties` says about keys that are not `properties`.
#[derive(Clone, Copy)]
enum Additional<'a> {
    Absent,
    Allows(bool),
    Schema(&'a Value),
}

impl<'a> Additional<'a> {
    fn of(s: &'a Value) -> Self {
        match s.get("additionalProperties") {
            Some(Value::Bool(b)) => Self::Allows(*b),
            Some(v @ Value::Object(_)) => Self::Schema(v),
            _ => Self::Absent,
        }
    }

    fn is_present(self) -> bool {
        !matches!(self, Self::Absent)
    }

    fn schema(self) -> Option<&'a Value> {
        match self {
            Self::Schema(v) => Some(v),
            _ => None,
        }
    }
}

/// The schema of a map entry: its property, else the additionalProperties schema.
fn field_schema<'a>(s: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    let s = s?;
    property(s, key).or_else(|| Additional::of(s).schema())
}

/// True when the value says something: not null, false, "", [] or {}.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) => true,
    }
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn key(path: &str, key: &str) -> String {
    format!("{path}[{key}]")
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

// ---------------------------------------------------------------------------------------------
// Structural schema checks
// ---------------------------------------------------------------------------------------------

/// Errors that make a CRD schema unacceptable, as `path: message` lines under
/// [`DEFAULT_SCHEMA_PATH`], e.g. `spec.validation.openAPIV3Schema.properties[spec].type:
/// Required value: must not be empty for specified object fields`. Empty when acceptable.
pub fn structural_errors(schema: &Value) -> Vec<String> {
    structural_errors_at(schema, DEFAULT_SCHEMA_PATH)
}

/// [`structural_errors`] with the schema's own path, e.g.
/// `spec.versions[1].schema.openAPIV3Schema` when versions carry different schemas.
pub fn structural_errors_at(schema: &Value, base: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if flag(schema, "nullable") {
        errors.push(cause(
            CauseReason::Forbidden,
            child(base, "nullable"),
            None,
            "nullable cannot be true at the root",
        ));
    }

    let mut structural = Vec::new();
    invariants(schema, Level::Root, base, &mut structural);
    completeness(schema, base, &mut structural);
    // The real server sorts these so the answer does not depend on map order.
    structural.sort_by_key(ToString::to_string);
    if structural.is_empty() {
        // Defaults are only checked against a schema that is itself sound.
        default_errors(schema, base, true, false, &mut errors);
    } else {
        errors.append(&mut structural);
    }

    openapi_errors(schema, base, &OpenApiContext::root(), &mut errors);
    errors.iter().map(ToString::to_string).collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

/// The invariants of a structural schema (apiextensions `validateStructuralInvariants`).
fn invariants(s: &Value, lvl: Level, path: &str, out: &mut Vec<Cause>) {
    let ty = text(s, "type");
    let int_or_string = flag(s, "x-kubernetes-int-or-string");
    let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
    let embedded = flag(s, "x-kubernetes-embedded-resource");
    let additional = Additional::of(s);

    if ty == "array" && s.get("items").is_none_or(Value::is_null) {
        out.push(cause(
            CauseReason::Required,
            child(path, "items"),
            None,
            "must be specified",
        ));
    }
    if let Some(item) = items(s) {
        invariants(item, Level::Item, &child(path, "items"), out);
    }
    for (name, prop) in properties(s).into_iter().flatten() {
        invariants(
            prop,
            Level::Field,
            &key(&child(path, "properties"), name),
            out,
        );
    }
    if additional.is_present() {
        if lvl == Level::Root {
            out.push(cause(
                CauseReason::Forbidden,
                child(path, "additionalProperties"),
                None,
                "must not be used at the root",
            ));
        }
        if let Some(ap) = additional.schema() {
            invariants(ap, Level::Field, &child(path, "additionalProperties"), out);
        }
    }

    if int_or_string && preserve {
        out.push(cause(
            CauseReason::Invalid,
            child(path, "x-kubernetes-preserve-unknown-fields"),
            Some(&Value::Bool(true)),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    if int_or_string && embedded {
        out.push(cause(
            CauseReason::Invalid,
            child(path, "x-kubernetes-embedded-resource"),
            Some(&Value::Bool(true)),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }

    // The two spellings of int-or-string the real server tolerates inside anyOf/allOf.
    let skip_any_of = is_int_or_string_any_of(list(s, "anyOf"));
    let skip_first_all_of_any_of = list(s, "allOf")
        .first()
        .is_some_and(|first| is_int_or_string_any_of(list(first, "anyOf")));
    value_validation(s, skip_any_of, skip_first_all_of_any_of, lvl, path, out);

    let check_metadata = lvl == Level::Root || embedded;
    if embedded && ty != "object" {
        let detail = "must be object if x-kubernetes-embedded-resource is true";
        if ty.is_empty() {
            out.push(cause(
                CauseReason::Required,
                child(path, "type"),
                None,
                detail,
            ));
        } else {
            out.push(cause(
                CauseReason::Invalid,
                child(path, "type"),
                Some(&ty.into()),
                detail,
            ));
        }
    } else if ty.is_empty() && !int_or_string && !preserve {
        let detail = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        out.push(cause(
            CauseReason::Required,
            child(path, "type"),
            None,
            detail,
        ));
    }
    if embedded && additional.is_present() {
        out.push(cause(
            CauseReason::Forbidden,
            child(path, "additionalProperties"),
            None,
            "must not be used if x-kubernetes-embedded-resource is set",
        ));
    }
    if lvl == Level::Root && !ty.is_empty() && ty != "object" {
        out.push(cause(
            CauseReason::Invalid,
            child(path, "type"),
            Some(&ty.into()),
            "must be object at the root",
        ));
    }

    if check_metadata {
        for name in ["kind", "apiVersion"] {
            if let Some(prop) = property(s, name) {
                let prop_type = text(prop, "type");
                if prop_type != "string" {
                    out.push(cause(
                        CauseReason::Invalid,
                        child(&key(&child(path, "properties"), name), "type"),
                        Some(&prop_type.into()),
                        "must be string",
                    ));
                }
            }
        }
    }
    if let Some(metadata) = property(s, "metadata") {
        let meta_path = key(&child(path, "properties"), "metadata");
        metadata_invariants(metadata, check_metadata, lvl, &meta_path, out);
    }

    if embedded && !preserve && properties(s).is_none_or(Map::is_empty) {
        out.push(cause(
            CauseReason::Required,
            child(path, "properties"),
            None,
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
}

/// A resource's metadata belongs to the server: its schema may only be `type: object` and
/// restrict `name` and `generateName`.
fn metadata_invariants(
    m: &Value,
    check_metadata: bool,
    lvl: Level,
    path: &str,
    out: &mut Vec<Cause>,
) {
    let ty = text(m, "type");
    if check_metadata && ty != "object" {
        out.push(cause(
            CauseReason::Invalid,
            child(path, "type"),
            Some(&ty.into()),
            "must be object",
        ));
    }
    if lvl != Level::Root {
        return;
    }
    let only_names =
        properties(m).is_none_or(|props| props.keys().all(|k| k == "name" || k == "generateName"));
    let says_more = STRUCTURAL_KEYS.iter().any(|k| match (*k, m.get(*k)) {
        ("properties", Some(_)) => !only_names,
        (_, Some(v)) => is_set(v),
        (_, None) => false,
    });
    if says_more {
        out.push(cause(
            CauseReason::Forbidden,
            path,
            None,
            "must not specify anything other than name and generateName, but metadata is implicitly specified",
        ));
    }
}

/// True for exactly `[{type: integer}, {type: string}]`.
fn is_int_or_string_any_of(any_of: &[Value]) -> bool {
    let is_only_type = |v: &Value, ty: &str| {
        v.as_object()
            .is_some_and(|o| o.len() == 1 && text(v, "type") == ty)
    };
    any_of.len() == 2 && is_only_type(&any_of[0], "integer") && is_only_type(&any_of[1], "string")
}

/// Checks the value validations (anyOf, allOf, oneOf, not, pattern) of a schema node.
fn value_validation(
    s: &Value,
    skip_any_of: bool,
    skip_first_all_of_any_of: bool,
    lvl: Level,
    path: &str,
    out: &mut Vec<Cause>,
) {
    if !skip_any_of {
        for (i, v) in list(s, "anyOf").iter().enumerate() {
            nested_value_validation(v, false, lvl, &index(&child(path, "anyOf"), i), out);
        }
    }
    for (i, v) in list(s, "allOf").iter().enumerate() {
        let skip = skip_first_all_of_any_of && i == 0;
        nested_value_validation(v, skip, lvl, &index(&child(path, "allOf"), i), out);
    }
    for (i, v) in list(s, "oneOf").iter().enumerate() {
        nested_value_validation(v, false, lvl, &index(&child(path, "oneOf"), i), out);
    }
    if let Some(not) = s.get("not").filter(|v| v.is_object()) {
        nested_value_validation(not, false, lvl, &child(path, "not"), out);
    }
    let pattern = text(s, "pattern");
    if !pattern.is_empty()
        && let Err(error) = Regex::new(pattern)
    {
        out.push(cause(
            CauseReason::Invalid,
            child(path, "pattern"),
            Some(&pattern.into()),
            &format!(
                "must be a valid regular expression, but isn't: {}",
                one_line(&error.to_string())
            ),
        ));
    }
}

/// A schema inside anyOf/allOf/oneOf/not may only validate values, never shape them.
fn nested_value_validation(
    v: &Value,
    skip_any_of: bool,
    lvl: Level,
    path: &str,
    out: &mut Vec<Cause>,
) {
    value_validation(v, skip_any_of, false, lvl, path, out);
    if let Some(item) = items(v) {
        nested_value_validation(item, false, lvl, &child(path, "items"), out);
    }
    for (name, prop) in properties(v).into_iter().flatten() {
        nested_value_validation(
            prop,
            false,
            Level::Field,
            &key(&child(path, "properties"), name),
            out,
        );
    }

    let mut forbid = |name: &str, detail: &str| {
        out.push(cause(
            CauseReason::Forbidden,
            child(path, name),
            None,
            detail,
        ));
    };
    if !text(v, "type").is_empty() {
        forbid("type", "must be empty to be structural");
    }
    if Additional::of(v).is_present() {
        forbid("additionalProperties", "must be undefined to be structural");
    }
    if default_of(v).is_some() {
        forbid("default", "must be undefined to be structural");
    }
    if !text(v, "title").is_empty() {
        forbid("title", "must be empty to be structural");
    }
    if !text(v, "description").is_empty() {
        forbid("description", "must be empty to be structural");
    }
    if flag(v, "nullable") {
        forbid("nullable", "must be false to be structural");
    }
    for name in [
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
    ] {
        if flag(v, name) {
            forbid(name, "must be false to be structural");
        }
    }
    if !list(v, "x-kubernetes-list-map-keys").is_empty() {
        forbid(
            "x-kubernetes-list-map-keys",
            "must be empty to be structural",
        );
    }
    for name in ["x-kubernetes-list-type", "x-kubernetes-map-type"] {
        if v.get(name).is_some_and(|x| !x.is_null()) {
            forbid(name, "must be undefined to be structural");
        }
    }
    if !list(v, "x-kubernetes-validations").is_empty() {
        forbid("x-kubernetes-validations", "must be empty to be structural");
    }
    if property(v, "metadata").is_some() {
        out.push(cause(
            CauseReason::Forbidden,
            key(&child(path, "properties"), "metadata"),
            None,
            "must not be specified in a nested context",
        ));
    }
}

/// Every property or items a root value validation talks about must exist structurally
/// (apiextensions `validateStructuralCompleteness`, which looks at the root's validations only).
fn completeness(s: &Value, path: &str, out: &mut Vec<Cause>) {
    value_completeness(s, s, path, path, out);
}

fn value_completeness(v: &Value, s: &Value, s_path: &str, v_path: &str, out: &mut Vec<Cause>) {
    if let Some(not) = v.get("not").filter(|n| n.is_object()) {
        nested_completeness(not, Some(s), s_path, &child(v_path, "not"), out);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for (i, sub) in list(v, junctor).iter().enumerate() {
            nested_completeness(
                sub,
                Some(s),
                s_path,
                &index(&child(v_path, junctor), i),
                out,
            );
        }
    }
}

fn nested_completeness(
    v: &Value,
    s: Option<&Value>,
    s_path: &str,
    v_path: &str,
    out: &mut Vec<Cause>,
) {
    let Some(s) = s else {
        let detail = format!("because it is defined in {v_path}");
        out.push(cause(CauseReason::Required, s_path, None, &detail));
        return;
    };
    value_completeness(v, s, s_path, v_path, out);
    if let Some(item) = items(v) {
        nested_completeness(
            item,
            items(s),
            &child(s_path, "items"),
            &child(v_path, "items"),
            out,
        );
    }
    for (name, prop) in properties(v).into_iter().flatten() {
        let sub_s_path = key(&child(s_path, "properties"), name);
        let sub_v_path = key(&child(v_path, "properties"), name);
        nested_completeness(prop, property(s, name), &sub_s_path, &sub_v_path, out);
    }
}

/// Every default must be valid for its schema and must not carry fields pruning would drop
/// (apiextensions `ValidateDefaults`).
/// `embedded` is true for the resource root, which counts as an embedded resource.
fn default_errors(s: &Value, path: &str, embedded: bool, inside_meta: bool, out: &mut Vec<Cause>) {
    // An embedded resource starts a new resource: its own metadata rules apply below it.
    let embedded = embedded || flag(s, "x-kubernetes-embedded-resource");
    let inside_meta = inside_meta && !embedded;
    if let Some(default) = default_of(s) {
        let default_path = child(path, "default");
        if !inside_meta {
            let mut pruned = default.clone();
            prune_node(&mut pruned, Some(s), embedded, "", &mut Vec::new());
            if &pruned != default {
                out.push(cause(
                    CauseReason::Invalid,
                    default_path.as_str(),
                    Some(default),
                    "must not have unknown fields",
                ));
            }
        }
        out.extend(validate_at(default, s, &default_path));
    }
    if let Some(item) = items(s) {
        default_errors(item, &child(path, "items"), false, inside_meta, out);
    }
    for (name, prop) in properties(s).into_iter().flatten() {
        let sub_inside_meta = inside_meta || (embedded && META_FIELDS.contains(&name.as_str()));
        let sub_path = key(&child(path, "properties"), name);
        default_errors(prop, &sub_path, false, sub_inside_meta, out);
    }
}

/// Where a schema node sits, for the OpenAPI-level CRD checks.
#[derive(Clone)]
struct OpenApiContext {
    is_root: bool,
    inside_resource_meta: bool,
    /// Why a default here is forbidden, if it is.
    forbidden_default: Option<String>,
}

impl OpenApiContext {
    fn root() -> Self {
        Self {
            is_root: true,
            inside_resource_meta: false,
            forbidden_default: None,
        }
    }

    fn nested(&self) -> Self {
        Self {
            is_root: false,
            ..self.clone()
        }
    }
}

/// The OpenAPI-level CRD schema checks (apiextensions `ValidateCustomResourceDefinitionOpenAPISchema`).
fn openapi_errors(s: &Value, path: &str, ctx: &OpenApiContext, out: &mut Vec<Cause>) {
    let ty = text(s, "type");
    if !ty.is_empty() && !SCHEMA_TYPES.contains(&ty) {
        let supported = SCHEMA_TYPES.map(go_quote).join(", ");
        let detail = format!("supported values: {supported}");
        out.push(cause(
            CauseReason::NotSupported,
            child(path, "type"),
            Some(&ty.into()),
            &detail,
        ));
    }
    if let (Some(reason), Some(_)) = (&ctx.forbidden_default, default_of(s)) {
        let detail = format!("must not be set {reason}");
        out.push(cause(
            CauseReason::Forbidden,
            child(path, "default"),
            None,
            &detail,
        ));
    }
    let mut forbid = |name: &str, detail: &str| {
        out.push(cause(
            CauseReason::Forbidden,
            child(path, name),
            None,
            detail,
        ));
    };
    if !text(s, "id").is_empty() {
        forbid("id", "id is not supported");
    }
    if s.get("additionalItems").is_some_and(|v| !v.is_null()) {
        forbid("additionalItems", "additionalItems is not supported");
    }
    if s.get("patternProperties").is_some_and(is_set) {
        forbid("patternProperties", "patternProperties is not supported");
    }
    if s.get("definitions").is_some_and(is_set) {
        forbid("definitions", "definitions is not supported");
    }
    if s.get("dependencies").is_some_and(|v| !v.is_null()) {
        forbid("dependencies", "dependencies is not supported");
    }
    if s.get("$ref").is_some_and(|v| !v.is_null()) {
        forbid("$ref", "$ref is not supported");
    }
    if ty == "null" {
        forbid(
            "type",
            "type cannot be set to null, use nullable as an alternative",
        );
    }
    if s.get("items")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        forbid("items", "items must be a schema object and not an array");
    }
    if ctx.inside_resource_meta && flag(s, "x-kubernetes-embedded-resource") {
        forbid(
            "x-kubernetes-embedded-resource",
            "must not be used inside of resource meta",
        );
    }
    if flag(s, "uniqueItems") {
        forbid(
            "uniqueItems",
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        );
    }

    let additional = Additional::of(s);
    if additional.is_present() {
        let has_properties = properties(s).is_some_and(|p| !p.is_empty());
        if has_properties && !matches!(additional, Additional::Allows(true)) {
            forbid(
                "additionalProperties",
                "additionalProperties and properties are mutual exclusive",
            );
        }
        if let Some(ap) = additional.schema() {
            let mut sub = ctx.nested();
            if ctx.inside_resource_meta {
                // Pruning cannot tell which map keys a default would apply to.
                sub.forbidden_default =
                    Some("inside additionalProperties applying to object metadata".to_owned());
            }
            openapi_errors(ap, &child(path, "additionalProperties"), &sub, out);
        }
    }

    let embedded = flag(s, "x-kubernetes-embedded-resource");
    for (name, prop) in properties(s).into_iter().flatten() {
        let mut sub = ctx.nested();
        if (ctx.is_root || embedded) && META_FIELDS.contains(&name.as_str()) {
            sub.inside_resource_meta = true;
            if ctx.is_root {
                sub.forbidden_default = Some(format!("in top-level {name}"));
            }
        }
        openapi_errors(prop, &key(&child(path, "properties"), name), &sub, out);
    }
    if let Some(not) = s.get("not").filter(|v| v.is_object()) {
        openapi_errors(not, &child(path, "not"), &ctx.nested(), out);
    }
    for junctor in ["allOf", "oneOf", "anyOf"] {
        for (i, sub) in list(s, junctor).iter().enumerate() {
            openapi_errors(sub, &index(&child(path, junctor), i), &ctx.nested(), out);
        }
    }
    match s.get("items") {
        Some(item @ Value::Object(_)) => {
            openapi_errors(item, &child(path, "items"), &ctx.nested(), out);
        }
        Some(Value::Array(all)) => {
            for (i, item) in all.iter().enumerate() {
                openapi_errors(item, &index(&child(path, "items"), i), &ctx.nested(), out);
            }
        }
        _ => {}
    }

    if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        out.push(cause(
            CauseReason::Invalid,
            child(path, "x-kubernetes-preserve-unknown-fields"),
            Some(&Value::Bool(false)),
            "must be true or undefined",
        ));
    }
    list_and_map_type_errors(s, ty, path, out);
}

/// The basic x-kubernetes-map-type / x-kubernetes-list-type consistency rules.
fn list_and_map_type_errors(s: &Value, ty: &str, path: &str, out: &mut Vec<Cause>) {
    let type_mismatch = |out: &mut Vec<Cause>, wanted: &str, extension: &str| {
        let detail = format!("must be {wanted} if {extension} is specified");
        if ty.is_empty() {
            out.push(cause(
                CauseReason::Required,
                child(path, "type"),
                None,
                &detail,
            ));
        } else {
            out.push(cause(
                CauseReason::Invalid,
                child(path, "type"),
                Some(&ty.into()),
                &detail,
            ));
        }
    };
    let not_supported = |out: &mut Vec<Cause>, extension: &str, value: &str, allowed: &[&str]| {
        let detail = format!(
            "supported values: {}",
            allowed
                .iter()
                .map(|a| go_quote(a))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out.push(cause(
            CauseReason::NotSupported,
            child(path, extension),
            Some(&value.into()),
            &detail,
        ));
    };

    if let Some(map_type) = s.get("x-kubernetes-map-type").and_then(Value::as_str) {
        if ty != "object" {
            type_mismatch(out, "object", "x-kubernetes-map-type");
        }
        if !matches!(map_type, "atomic" | "granular") {
            not_supported(
                out,
                "x-kubernetes-map-type",
                map_type,
                &["atomic", "granular"],
            );
        }
    }
    let list_type = s.get("x-kubernetes-list-type").and_then(Value::as_str);
    if let Some(list_type) = list_type {
        if ty != "array" {
            type_mismatch(out, "array", "x-kubernetes-list-type");
        }
        if !matches!(list_type, "atomic" | "set" | "map") {
            not_supported(
                out,
                "x-kubernetes-list-type",
                list_type,
                &["atomic", "set", "map"],
            );
        }
    }
    let map_keys = list(s, "x-kubernetes-list-map-keys");
    if !map_keys.is_empty() && list_type != Some("map") {
        let detail = "must be map if x-kubernetes-list-map-keys is non-empty";
        match list_type {
            None => out.push(cause(
                CauseReason::Required,
                child(path, "x-kubernetes-list-type"),
                None,
                detail,
            )),
            Some(other) => out.push(cause(
                CauseReason::Invalid,
                child(path, "x-kubernetes-list-type"),
                Some(&other.into()),
                detail,
            )),
        }
    }
    if list_type == Some("map") && map_keys.is_empty() {
        out.push(cause(
            CauseReason::Required,
            child(path, "x-kubernetes-list-map-keys"),
            None,
            "must not be empty if x-kubernetes-list-type is map",
        ));
    }
}

/// Regex errors span lines; a cause message must not.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// Pruning
// ---------------------------------------------------------------------------------------------

/// Removes fields the schema does not declare (keeping everything under
/// `x-kubernetes-preserve-unknown-fields: true`, and apiVersion/kind/metadata at the root and in
/// embedded resources), then drops nulls the schema neither allows nor defaults. Returns the
/// pruned paths sorted, in the real server's form (`spec.foo`, `spec.list[0].bar`), for the
/// `unknown field "…"` warnings.
pub fn prune(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    prune_node(obj, Some(schema), true, "", &mut unknown);
    drop_disallowed_nulls(obj, Some(schema));
    unknown.sort();
    unknown
}

/// apiextensions `pruning.prune`. `embedded` marks a resource root whose meta fields are kept.
fn prune_node(
    x: &mut Value,
    s: Option<&Value>,
    embedded: bool,
    path: &str,
    unknown: &mut Vec<String>,
) {
    if let Some(s) = s.filter(|s| flag(s, "x-kubernetes-preserve-unknown-fields")) {
        keep_unknown(x, s, embedded, path, unknown);
        return;
    }
    match x {
        Value::Object(map) => {
            let Some(s) = s else {
                unknown.extend(map.keys().map(|k| child(path, k)));
                map.clear();
                return;
            };
            let embedded = embedded || flag(s, "x-kubernetes-embedded-resource");
            let additional = Additional::of(s);
            let mut dropped = Vec::new();
            for (k, v) in map.iter_mut() {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(prop) = property(s, k) {
                    prune_node(v, Some(prop), false, &child(path, k), unknown);
                } else if additional.is_present() {
                    prune_node(v, additional.schema(), false, &child(path, k), unknown);
                } else {
                    // Unknown meta fields at the root are dropped silently, as upstream does.
                    if !META_FIELDS.contains(&k.as_str()) || !path.is_empty() {
                        unknown.push(child(path, k));
                    }
                    dropped.push(k.clone());
                }
            }
            if !dropped.is_empty() {
                map.retain(|k, _| !dropped.contains(k));
            }
        }
        Value::Array(all) => {
            let item = s.and_then(items);
            for (i, v) in all.iter_mut().enumerate() {
                prune_node(v, item, false, &index(path, i), unknown);
            }
        }
        _ => {}
    }
}

/// apiextensions `skipPrune`: under preserve-unknown-fields, unknown keys stay but declared ones
/// are still pruned by their own schema.
fn keep_unknown(x: &mut Value, s: &Value, embedded: bool, path: &str, unknown: &mut Vec<String>) {
    match x {
        Value::Object(map) => {
            let embedded = embedded || flag(s, "x-kubernetes-embedded-resource");
            let additional = Additional::of(s);
            for (k, v) in map.iter_mut() {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(prop) = property(s, k) {
                    prune_node(v, Some(prop), false, &child(path, k), unknown);
                } else if additional.is_present() {
                    prune_node(v, additional.schema(), false, &child(path, k), unknown);
                }
            }
        }
        Value::Array(all) => {
            if let Some(item) = items(s) {
                for (i, v) in all.iter_mut().enumerate() {
                    keep_unknown(v, item, false, &index(path, i), unknown);
                }
            }
        }
        _ => {}
    }
}

/// apiextensions `PruneNonNullableNullsWithoutDefaults`: a null for a field that is neither
/// nullable nor defaulted is treated as absent. Nulls with a default are left for defaulting.
fn drop_disallowed_nulls(x: &mut Value, s: Option<&Value>) {
    match x {
        Value::Object(map) => {
            map.retain(|k, v| {
                let schema = field_schema(s, k);
                let disallowed = v.is_null()
                    && schema.is_some_and(|fs| !flag(fs, "nullable") && default_of(fs).is_none());
                !disallowed
            });
            for (k, v) in map.iter_mut() {
                drop_disallowed_nulls(v, field_schema(s, k));
            }
        }
        Value::Array(all) => {
            let item = s.and_then(items);
            for v in all {
                drop_disallowed_nulls(v, item);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------------------------

/// Applies schema `default`s like the apiserver: a property's default fills it when it is absent
/// (or null but not nullable) in an object that is present; defaults of array items fill null
/// items; defaulted values are then defaulted themselves.
pub fn apply_defaults(obj: &mut Value, schema: &Value) {
    match obj {
        Value::Object(map) => {
            for (name, prop) in properties(schema).into_iter().flatten() {
                let Some(default) = default_of(prop) else {
                    continue;
                };
                let fill = match map.get(name) {
                    None => true,
                    Some(v) => v.is_null() && !flag(prop, "nullable"),
                };
                if fill {
                    map.insert(name.clone(), default.clone());
                }
            }
            let additional = Additional::of(schema).schema();
            for (k, v) in map.iter_mut() {
                if let Some(prop) = property(schema, k) {
                    apply_defaults(v, prop);
                } else if let Some(ap) = additional {
                    if v.is_null() && !flag(ap, "nullable") {
                        *v = default_of(ap).cloned().unwrap_or(Value::Null);
                    }
                    apply_defaults(v, ap);
                }
            }
        }
        Value::Array(all) => {
            if let Some(item) = items(schema) {
                for v in all {
                    if v.is_null() && !flag(item, "nullable") {
                        *v = default_of(item).cloned().unwrap_or(Value::Null);
                    }
                    apply_defaults(v, item);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Validates an object against its schema; causes carry the dotted paths and messages of the
/// real server, e.g. field `spec.accepted`, message `Invalid value: "string": spec.accepted in
/// body must be of type boolean: "string"`.
pub fn validate(obj: &Value, schema: &Value) -> Vec<Cause> {
    validate_at(obj, schema, "")
}

/// [`validate`] for a value that sits at `base` (e.g. `status` when validating the status
/// subresource alone): cause fields are prefixed with it, and path-less failures are reported
/// against it instead of `<nil>`.
pub fn validate_at(value: &Value, schema: &Value, base: &str) -> Vec<Cause> {
    validate_node(value, schema, "")
        .failures
        .into_iter()
        .map(|failure| failure.into_cause(base))
        .collect()
}

/// A kube-openapi validation error before it becomes a cause.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    /// An `errors.Validation`: reported against the value's path.
    At { name: String, kind: Kind },
    /// A plain error: the real server reports it against the base path with an empty value.
    Plain(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Type { message: String, shown: String },
    Required,
    Enum { value: Value, allowed: Vec<Value> },
    TooLong { max: i64 },
    TooMany { actual: i64, max: i64 },
    Invalid { value: Value, message: String },
}

impl Failure {
    fn at(name: &str, kind: Kind) -> Self {
        Self::At {
            name: name.to_owned(),
            kind,
        }
    }

    fn invalid(name: &str, value: impl Into<Value>, message: String) -> Self {
        Self::at(
            name,
            Kind::Invalid {
                value: value.into(),
                message,
            },
        )
    }

    /// apiextensions `kubeOpenAPIResultToFieldErrors`.
    fn into_cause(self, base: &str) -> Cause {
        let base_field = if base.is_empty() { "<nil>" } else { base };
        let (name, kind) = match self {
            Self::Plain(message) => {
                return cause(CauseReason::Invalid, base_field, Some(&"".into()), &message);
            }
            Self::At { name, kind } => (name, kind),
        };
        let field = if name.is_empty() || name == "." {
            base_field.to_owned()
        } else {
            child(base, name.strip_prefix('.').unwrap_or(&name))
        };
        match kind {
            Kind::Type { message, shown } => cause(
                CauseReason::TypeInvalid,
                field,
                Some(&shown.into()),
                &message,
            ),
            Kind::Required => cause(CauseReason::Required, field, None, ""),
            Kind::Enum { value, allowed } => {
                let supported = allowed
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => go_quote(s),
                        Value::Number(n) => go_quote(&go_json_number(n)),
                        other => go_quote(&other.to_string()),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let detail = format!("supported values: {supported}");
                cause(CauseReason::NotSupported, field, Some(&value), &detail)
            }
            Kind::TooLong { max } => cause(
                CauseReason::TooLong,
                field,
                None,
                &format!("may not be more than {max} bytes"),
            ),
            Kind::TooMany { actual, max } => cause(
                CauseReason::TooMany,
                field,
                Some(&actual.into()),
                &format!("must have at most {max} items"),
            ),
            Kind::Invalid { value, message } => {
                cause(CauseReason::Invalid, field, Some(&value), &message)
            }
        }
    }
}

/// The failures of validating one value, and how many validators applied (kube-openapi's
/// `MatchCount`, which picks the anyOf/oneOf branch whose failures get reported).
#[derive(Debug, Default)]
struct Outcome {
    failures: Vec<Failure>,
    matches: usize,
}

impl Outcome {
    fn add(&mut self, failure: Failure) {
        // kube-openapi reports each distinct error once.
        if !self.failures.contains(&failure) {
            self.failures.push(failure);
        }
    }

    fn merge(&mut self, other: Outcome) {
        for failure in other.failures {
            self.add(failure);
        }
        self.matches += other.matches;
    }

    fn is_valid(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A JSON number as the Go decoder sees it: int64 when it is one, float64 otherwise.
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(n: &serde_json::Number) -> Self {
        match n.as_i64() {
            Some(i) => Self::Int(i),
            None => Self::Float(n.as_f64().unwrap_or(f64::NAN)),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }
}

/// The types a value may have: `type`, or integer and string for int-or-string.
fn schema_types(s: &Value) -> Vec<&str> {
    if flag(s, "x-kubernetes-int-or-string") {
        return vec!["integer", "string"];
    }
    match text(s, "type") {
        "" => Vec::new(),
        ty => vec![ty],
    }
}

/// The format the apiserver keeps after dropping the ones it does not support for the type.
fn effective_format<'a>(s: &'a Value, types: &[&str]) -> &'a str {
    let format = text(s, "format");
    if format.is_empty() {
        return "";
    }
    let single = if types.len() == 1 { types[0] } else { "" };
    let kept = match single {
        "" | "string" => STRING_FORMATS.contains(&format.replace('-', "").as_str()),
        "integer" => matches!(format, "int32" | "int64"),
        "number" => matches!(format, "float" | "double"),
        _ => false,
    };
    if kept { format } else { "" }
}

/// kube-openapi `SchemaValidator.Validate`: the validators run in the upstream order, each only
/// for the kinds of value it applies to.
fn validate_node(data: &Value, s: &Value, path: &str) -> Outcome {
    let mut out = Outcome::default();
    let types = schema_types(s);
    let format = effective_format(s, &types);

    if data.is_null() {
        if !types.is_empty() && !flag(s, "nullable") {
            out.add(type_failure(path, &types.join(","), "null"));
        }
        check_enum(data, s, path, &mut out);
        out.matches += 1;
        return out;
    }

    if !types.is_empty() || !format.is_empty() {
        check_type(data, &types, format, path, &mut out);
        out.matches += 1;
    }
    check_junctors(data, s, path, &mut out);
    out.matches += 1;
    match data {
        Value::String(string) => {
            check_string(string, s, path, &mut out);
            out.matches += 1;
            if STRING_FORMATS.contains(&format.replace('-', "").as_str()) {
                if !format_matches(format, string) {
                    let message = format!(
                        "{path} in {IN} must be of type {format}: {}",
                        go_quote(string)
                    );
                    out.add(Failure::at(
                        path,
                        Kind::Type {
                            message,
                            shown: string.clone(),
                        },
                    ));
                }
                out.matches += 1;
            }
        }
        Value::Number(n) => {
            check_number(Num::of(n), data, s, &types, format, path, &mut out);
            out.matches += 1;
        }
        Value::Array(all) => {
            check_array(all, s, path, &mut out);
            out.matches += 1;
        }
        _ => {}
    }
    check_enum(data, s, path, &mut out);
    out.matches += 1;
    if let Value::Object(map) = data {
        check_object(map, s, path, &mut out);
        out.matches += 1;
    }
    out
}

fn type_failure(path: &str, type_name: &str, shown: &str) -> Failure {
    let message = format!(
        "{path} in {IN} must be of type {type_name}: {}",
        go_quote(shown)
    );
    Failure::at(
        path,
        Kind::Type {
            message,
            shown: shown.to_owned(),
        },
    )
}

/// kube-openapi `typeValidator`, including its treatment of formats and of integral floats.
fn check_type(data: &Value, types: &[&str], format: &str, path: &str, out: &mut Outcome) {
    let (kind, kind_format) = match data {
        Value::Bool(_) => ("boolean", ""),
        Value::String(_) => ("string", ""),
        Value::Number(n) if n.as_i64().is_some() => ("integer", "int64"),
        Value::Number(_) => ("number", "float64"),
        Value::Array(_) => ("array", ""),
        _ => ("object", ""),
    };
    let stringish = matches!(data, Value::String(_) | Value::Array(_));
    let float_as_int = kind == "number"
        && data.as_f64().is_some_and(is_json_integer)
        && types.contains(&"integer");
    let int_as_float = kind == "integer" && types.contains(&"number");
    let matches_type = types.contains(&kind) || float_as_int || int_as_float;

    // A format on a non-string value must match the value's own format, unless the type does.
    let format_applies = !stringish && !format.is_empty();
    if format_applies && !matches_type && kind_format != format {
        out.add(type_failure(path, format, kind_format));
        return;
    }
    let numeric = types.contains(&"number") || types.contains(&"integer");
    if !numeric && !format.is_empty() && stringish {
        return;
    }
    if !matches_type {
        out.add(type_failure(path, &types.join(","), kind));
    }
}

/// swag `IsFloat64AJSONInteger`: integral (within a relative 1e-9) and exactly representable.
fn is_json_integer(f: f64) -> bool {
    if !f.is_finite() || f.abs() > MAX_JSON_FLOAT {
        return false;
    }
    let truncated = f.trunc();
    if f == truncated {
        return true;
    }
    (f - truncated).abs() / (f.abs() + truncated.abs()) < 1e-9
}

/// kube-openapi `schemaPropsValidator` for anyOf, oneOf, allOf and not.
fn check_junctors(data: &Value, s: &Value, path: &str, out: &mut Outcome) {
    // Most nodes have no junctors; skip building the quoted path for them.
    if ["anyOf", "oneOf", "allOf", "not"]
        .iter()
        .all(|k| s.get(k).is_none())
    {
        return;
    }
    let quoted = go_quote(path);

    let any_of = list(s, "anyOf");
    if !any_of.is_empty() {
        let mut best: Option<Outcome> = None;
        let mut success: Option<Outcome> = None;
        for sub in any_of {
            let result = validate_node(data, sub, path);
            if result.is_valid() {
                best = None;
                success = Some(result);
                break;
            }
            if best.as_ref().is_none_or(|b| result.matches > b.matches) {
                best = Some(result);
            }
        }
        if success.is_none() {
            out.add(Failure::Plain(format!(
                "{quoted} must validate at least one schema (anyOf)"
            )));
        }
        if let Some(chosen) = best.or(success) {
            out.merge(chosen);
        }
    }

    let one_of = list(s, "oneOf");
    if !one_of.is_empty() {
        let mut best: Option<Outcome> = None;
        let mut success: Option<Outcome> = None;
        let mut valid = 0;
        for sub in one_of {
            let result = validate_node(data, sub, path);
            if result.is_valid() {
                valid += 1;
                best = None;
                success.get_or_insert(result);
                continue;
            }
            if valid == 0 && best.as_ref().is_none_or(|b| result.matches > b.matches) {
                best = Some(result);
            }
        }
        if valid == 1 {
            if let Some(chosen) = success {
                out.merge(chosen);
            }
        } else {
            let found = if valid == 0 {
                "Found none valid".to_owned()
            } else {
                format!("Found {valid} valid alternatives")
            };
            out.add(Failure::Plain(format!(
                "{quoted} must validate one and only one schema (oneOf). {found}"
            )));
            if let Some(chosen) = best {
                out.merge(chosen);
            }
        }
    }

    let all_of = list(s, "allOf");
    if !all_of.is_empty() {
        let mut valid = 0;
        for sub in all_of {
            let result = validate_node(data, sub, path);
            if result.is_valid() {
                valid += 1;
            }
            out.merge(result);
        }
        if valid != all_of.len() {
            let none = if valid == 0 { ". None validated" } else { "" };
            out.add(Failure::Plain(format!(
                "{quoted} must validate all the schemas (allOf){none}"
            )));
        }
    }

    if let Some(not) = s.get("not").filter(|v| v.is_object())
        && validate_node(data, not, path).is_valid()
    {
        out.add(Failure::Plain(format!(
            "{quoted} must not validate the schema (not)"
        )));
    }
}

/// kube-openapi `stringValidator`: stops at the first failure.
fn check_string(string: &str, s: &Value, path: &str, out: &mut Outcome) {
    let length = string.chars().count() as i64;
    if let Some(max) = int_field(s, "maxLength")
        && length > max
    {
        out.add(Failure::at(path, Kind::TooLong { max }));
        return;
    }
    if let Some(min) = int_field(s, "minLength")
        && length < min
    {
        let message = format!("{path} in {IN} should be at least {min} chars long");
        out.add(Failure::invalid(path, string, message));
        return;
    }
    let pattern = text(s, "pattern");
    if pattern.is_empty() {
        return;
    }
    match Regex::new(pattern) {
        Ok(re) if re.is_match(string) => {}
        Ok(_) => {
            let message = format!("{path} in {IN} should match '{pattern}'");
            out.add(Failure::invalid(path, string, message));
        }
        Err(error) => {
            let message = format!(
                "{path} in {IN} should match '{pattern}, but pattern is invalid: {}'",
                one_line(&error.to_string())
            );
            out.add(Failure::invalid(path, string, message));
        }
    }
}

/// kube-openapi `numberValidator`: the range check of the value itself, then multipleOf,
/// minimum and maximum, each comparing natively when its bound fits the type.
fn check_number(
    value: Num,
    data: &Value,
    s: &Value,
    types: &[&str],
    format: &str,
    path: &str,
    out: &mut Outcome,
) {
    let type_name = match types {
        [ty @ ("integer" | "number")] => *ty,
        _ => "",
    };
    let format = match (type_name, format) {
        ("integer", "int32" | "int64") | ("number", "float" | "double") => format,
        _ => "",
    };
    let out_of_range = |v: Num, prefix: &str| -> Option<Failure> {
        if fits_type(v, type_name, format) {
            return None;
        }
        let message = if format.is_empty() {
            format!("{prefix} value must be of type {type_name} (default format) in {path}")
        } else {
            format!("{prefix} value must be of type {type_name} with format {format} in {path}")
        };
        Some(Failure::Plain(message))
    };

    if let Some(failure) = out_of_range(value, "Checked") {
        out.add(failure);
    }

    if let Some(factor) = num_field(s, "multipleOf") {
        let bound_error = out_of_range(Num::Float(factor), "MultipleOf");
        let native = bound_error.is_none();
        if let Some(failure) = bound_error {
            out.add(failure);
        }
        if let Some(failure) = multiple_of_failure(value, data, factor, native, path) {
            out.add(failure);
        }
    }

    for (bound_key, exclusive_key, prefix, is_min) in [
        ("minimum", "exclusiveMinimum", "Minimum boundary", true),
        ("maximum", "exclusiveMaximum", "Maximum boundary", false),
    ] {
        let Some(bound) = num_field(s, bound_key) else {
            continue;
        };
        let exclusive = flag(s, exclusive_key);
        let bound_error = out_of_range(Num::Float(bound), prefix);
        let native = bound_error.is_none();
        if let Some(failure) = bound_error {
            out.add(failure);
        }
        // Integers compare against the bound truncated to an integer, as upstream does.
        let (beyond, shown_bound) = match value {
            Num::Int(i) if native => {
                let b = bound as i64;
                let beyond = if is_min {
                    i < b || (exclusive && i == b)
                } else {
                    i > b || (exclusive && i == b)
                };
                (beyond, b.to_string())
            }
            _ => {
                let f = value.as_f64();
                let beyond = if is_min {
                    f < bound || (exclusive && f == bound)
                } else {
                    f > bound || (exclusive && f == bound)
                };
                (beyond, go_float(bound))
            }
        };
        if beyond {
            let relation = match (is_min, exclusive) {
                (true, false) => "greater than or equal to",
                (true, true) => "greater than",
                (false, false) => "less than or equal to",
                (false, true) => "less than",
            };
            let message = format!("{path} in {IN} should be {relation} {shown_bound}");
            out.add(Failure::invalid(path, data.clone(), message));
        }
    }
}

/// kube-openapi `IsValueValidAgainstRange`: does the number fit the schema's type and format?
fn fits_type(value: Num, type_name: &str, format: &str) -> bool {
    match type_name {
        "integer" => {
            let as_int = match value {
                Num::Int(i) => Some(i),
                // Go formats the float without exponent and parses it as an integer.
                Num::Float(f) if f.fract() == 0.0 && I64_AS_F64.contains(&f) => Some(f as i64),
                Num::Float(_) => None,
            };
            match (as_int, format) {
                (Some(i), "int32") => i32::try_from(i).is_ok(),
                (Some(_), _) => true,
                (None, _) => false,
            }
        }
        _ => format != "float" || value.as_f64().abs() <= f64::from(f32::MAX),
    }
}

fn multiple_of_failure(
    value: Num,
    data: &Value,
    factor: f64,
    native: bool,
    path: &str,
) -> Option<Failure> {
    let not_positive = |shown: String, bad: Value| {
        let message = format!("factor MultipleOf declared for {path} must be positive: {shown}");
        Some(Failure::invalid(path, bad, message))
    };
    match value {
        Num::Int(i) if native => {
            let f = factor as i64;
            if f <= 0 {
                return not_positive(f.to_string(), f.into());
            }
            (i % f != 0).then(|| {
                Failure::invalid(
                    path,
                    data.clone(),
                    format!("{path} in {IN} should be a multiple of {f}"),
                )
            })
        }
        _ => {
            if factor <= 0.0 {
                return not_positive(go_float(factor), float_value(factor));
            }
            let data_f = value.as_f64();
            let multiple = if factor < 1.0 {
                1.0 / factor * data_f
            } else {
                data_f / factor
            };
            (!is_json_integer(multiple)).then(|| {
                let message = format!(
                    "{path} in {IN} should be a multiple of {}",
                    go_float(factor)
                );
                Failure::invalid(path, data.clone(), message)
            })
        }
    }
}

fn float_value(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// kube-openapi `schemaSliceValidator`.
fn check_array(all: &[Value], s: &Value, path: &str, out: &mut Outcome) {
    if let Some(item) = items(s) {
        for (i, v) in all.iter().enumerate() {
            out.merge(validate_node(v, item, &index(path, i)));
        }
    }
    let size = all.len() as i64;
    if let Some(min) = int_field(s, "minItems")
        && size < min
    {
        let message = format!("{path} in {IN} should have at least {min} items");
        out.add(Failure::invalid(path, size, message));
    }
    if let Some(max) = int_field(s, "maxItems")
        && size > max
    {
        out.add(Failure::at(path, Kind::TooMany { actual: size, max }));
    }
}

/// kube-openapi `basicCommonValidator`: the value must equal one of `enum` (a null never does).
fn check_enum(data: &Value, s: &Value, path: &str, out: &mut Outcome) {
    let allowed = list(s, "enum");
    if allowed.is_empty() || (!data.is_null() && allowed.iter().any(|e| json_equal(data, e))) {
        return;
    }
    out.add(Failure::at(
        path,
        Kind::Enum {
            value: data.clone(),
            allowed: allowed.to_vec(),
        },
    ));
}

/// Equality with numbers compared by value, as Go compares an int64 with a float64 enum entry.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => Num::of(x).as_f64() == Num::of(y).as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// kube-openapi `objectValidator` (patternProperties are not allowed in CRDs).
fn check_object(map: &Map<String, Value>, s: &Value, path: &str, out: &mut Outcome) {
    let count = map.len() as i64;
    if let Some(min) = int_field(s, "minProperties")
        && count < min
    {
        let message = format!("{path} in {IN} should have at least {min} properties");
        out.add(Failure::invalid(path, count, message));
    }
    if let Some(max) = int_field(s, "maxProperties")
        && count > max
    {
        out.add(Failure::at(path, Kind::TooMany { actual: count, max }));
    }

    let additional = Additional::of(s);
    if let Additional::Allows(false) = additional {
        for k in map.keys().filter(|k| property(s, k).is_none()) {
            let message = format!("{path}.{k} in {IN} is a forbidden property");
            out.add(Failure::invalid(path, k.as_str(), message));
        }
    }
    for (k, v) in map {
        if let Some(prop) = property(s, k) {
            out.merge(validate_node(v, prop, &child(path, k)));
        } else if let Some(ap) = additional.schema() {
            // Upstream joins map keys with a dot even at the root; the dot is trimmed later.
            out.merge(validate_node(v, ap, &format!("{path}.{k}")));
        }
    }
    for required in list(s, "required").iter().filter_map(Value::as_str) {
        if !map.contains_key(required) {
            out.add(Failure::at(&format!("{path}.{required}"), Kind::Required));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// String formats
// ---------------------------------------------------------------------------------------------

/// Checks a string against a supported format as go-openapi strfmt does. Formats whose checks
/// are not reproduced here (uri, email, isbn*, creditcard, duration) accept every string.
fn format_matches(format: &str, value: &str) -> bool {
    let matches = |pattern: &str| Regex::new(pattern).is_ok_and(|re| re.is_match(value));
    match format.replace('-', "").as_str() {
        "datetime" => is_date_time(value),
        "date" => is_date(value),
        "uuid" => {
            matches(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
        }
        "uuid3" => {
            matches(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
        }
        "uuid4" => matches(
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$",
        ),
        "uuid5" => matches(
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$",
        ),
        "ipv4" => value.contains('.') && value.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => value.contains(':') && value.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => is_cidr(value),
        "mac" => is_mac(value),
        "hostname" => is_hostname(value),
        "byte" => matches(
            r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$",
        ),
        "bsonobjectid" => matches(r"^[0-9a-fA-F]{24}$"),
        "hexcolor" => matches(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"),
        "rgbcolor" => matches(
            r"^rgb\(\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*\)$",
        ),
        "ssn" => matches(r"^\d{3}[- ]?\d{2}[- ]?\d{4}$"),
        _ => true,
    }
}

/// Go `time.Parse("2006-01-02", …)`.
fn is_date(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return false;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = value.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// strfmt `IsDateTime`: a date, a `t`, and a time with a zone, case-insensitively.
fn is_date_time(value: &str) -> bool {
    if value.len() < 4 {
        return false;
    }
    let lower = value.to_lowercase();
    let parts: Vec<&str> = lower.split('t').collect();
    if parts.len() < 2 || !is_date(parts[0]) {
        return false;
    }
    let Ok(re) =
        Regex::new(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
    else {
        return false;
    };
    re.captures(parts[1]).is_some_and(|c| {
        let field = |i: usize| c.get(i).map_or("", |m| m.as_str());
        field(1) <= "23" && field(2) <= "59" && field(3) <= "59"
    })
}

fn is_cidr(value: &str) -> bool {
    let Some((ip, prefix)) = value.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

/// Go `net.ParseMAC`: 6, 8 or 20 octets as `xx:xx…`, `xx-xx…` or `xxxx.xxxx…`.
fn is_mac(value: &str) -> bool {
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let octet_groups = |sep: char| {
        let groups: Vec<&str> = value.split(sep).collect();
        matches!(groups.len(), 6 | 8 | 20) && groups.iter().all(|g| hex(g, 2))
    };
    let dotted = {
        let groups: Vec<&str> = value.split('.').collect();
        matches!(groups.len(), 3 | 4 | 10) && groups.iter().all(|g| hex(g, 4))
    };
    octet_groups(':') || octet_groups('-') || dotted
}

/// strfmt `IsHostname`.
fn is_hostname(value: &str) -> bool {
    let pattern = r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$";
    Regex::new(pattern).is_ok_and(|re| re.is_match(value))
        && value.len() <= 255
        && value.split('.').all(|label| label.len() <= 63)
}

// ---------------------------------------------------------------------------------------------
// Go formatting
// ---------------------------------------------------------------------------------------------

/// Go `strconv.Quote`, which `%q` uses.
fn go_quote(s: &str) -> String {
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
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The shortest decimal digits that round-trip `f` (nonzero, finite, positive) and the position
/// of the decimal point: `f = 0.DIGITS × 10^point`.
fn shortest_digits(f: f64) -> (String, i32) {
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    (digits, exponent + 1)
}

/// Places `digits` with the decimal point at `point`, without exponent.
fn fixed_notation(digits: &str, point: i32) -> String {
    let len = digits.len() as i32;
    if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point >= len {
        format!("{digits}{}", "0".repeat((point - len) as usize))
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{whole}.{fraction}")
    }
}

/// `d.ddde±XX`, with at least two exponent digits as Go writes them.
fn exponent_notation(digits: &str, point: i32) -> String {
    let (first, rest) = digits.split_at(1);
    let exponent = point - 1;
    let sign = if exponent < 0 { '-' } else { '+' };
    let dot = if rest.is_empty() { "" } else { "." };
    format!("{first}{dot}{rest}e{sign}{:02}", exponent.abs())
}

/// Go `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): exponent form below 1e-4 and
/// from 1e6 on, e.g. `1e+06`, `1.5`, `0.0001`.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0");
    }
    let (digits, point) = shortest_digits(f.abs());
    let exponent = point - 1;
    let body = if !(-4..6).contains(&exponent) {
        exponent_notation(&digits, point)
    } else {
        fixed_notation(&digits, point)
    };
    format!("{sign}{body}")
}

/// Go `encoding/json` of a number decoded as float64 (how enum entries reach the message).
fn go_json_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64()
        && i.unsigned_abs() < (1u64 << 53)
    {
        return i.to_string();
    }
    let f = Num::of(n).as_f64();
    if !f.is_finite() {
        return n.to_string();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0");
    }
    let abs = f.abs();
    let (digits, point) = shortest_digits(abs);
    let body = if !(1e-6..1e21).contains(&abs) {
        // Go trims the exponent's leading zero: 1e-07 becomes 1e-7.
        let e = exponent_notation(&digits, point);
        match e.rsplit_once("e-0") {
            Some((head, tail)) => format!("{head}e-{tail}"),
            None => e,
        }
    } else {
        fixed_notation(&digits, point)
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "properties": {
                        "accepted": {"type": "boolean"},
                        "hostname": {"type": "string"}
                    },
                    "required": ["accepted"]
                }
            }
        })
    }

    fn messages(causes: &[Cause]) -> Vec<String> {
        let mut all: Vec<String> = causes.iter().map(ToString::to_string).collect();
        all.sort();
        all
    }

    fn sorted(lines: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
        all.sort();
        all
    }

    fn object_with(field: Value) -> Value {
        json!({"type": "object", "properties": {"field": field}})
    }

    // --- validation --------------------------------------------------------------------------

    #[test]
    fn string_for_boolean_is_one_type_cause_on_the_field() {
        let causes = validate(&json!({"spec": {"accepted": "yes"}}), &server_schema());
        assert_eq!(
            causes,
            vec![Cause {
                reason: CauseReason::TypeInvalid,
                field: "spec.accepted".into(),
                message: r#"Invalid value: "string": spec.accepted in body must be of type boolean: "string""#
                    .into(),
            }]
        );
        assert_eq!(causes[0].reason.as_str(), "FieldValueTypeInvalid");
    }

    #[test]
    fn valid_object_has_no_causes() {
        let obj = json!({"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
            "metadata": {"name": "a"}, "spec": {"accepted": true, "hostname": "h"}});
        assert!(validate(&obj, &server_schema()).is_empty());
    }

    #[test]
    fn missing_required_field_is_required_value() {
        let causes = validate(&json!({"spec": {}}), &server_schema());
        assert_eq!(
            causes,
            vec![Cause {
                reason: CauseReason::Required,
                field: "spec.accepted".into(),
                message: "Required value".into(),
            }]
        );
    }

    #[test]
    fn enum_violation_lists_supported_values() {
        let schema = json!({"type": "object", "properties": {"field": {
        "type": "object", "required": ["nestedint", "nestedstring"],
        "properties": {
            "nestedint": {"type": "integer", "enum": [1, 2]},
            "nestedstring": {"type": "string", "enum": ["a", "b"]}
        }}}});
        let causes = validate(
            &json!({"field": {"nestedint": "x", "nestedstring": true}}),
            &schema,
        );
        // The expected lines are kube's own (apiextensions validation_test.go, "enum").
        assert_eq!(
            messages(&causes),
            sorted(&[
                r#"field.nestedint: Invalid value: "string": field.nestedint in body must be of type integer: "string""#,
                r#"field.nestedint: Unsupported value: "x": supported values: "1", "2""#,
                r#"field.nestedstring: Invalid value: "boolean": field.nestedstring in body must be of type string: "boolean""#,
                r#"field.nestedstring: Unsupported value: true: supported values: "a", "b""#,
            ])
        );
        let unsupported = causes
            .iter()
            .find(|c| c.field == "field.nestedint" && c.reason == CauseReason::NotSupported);
        assert!(unsupported.is_some());
    }

    #[test]
    fn enum_accepts_listed_value_and_integer_equal_to_float_entry() {
        let schema = object_with(json!({"type": "number", "enum": [1.0, 2.5]}));
        assert!(validate(&json!({"field": 1}), &schema).is_empty());
        assert!(validate(&json!({"field": 2.5}), &schema).is_empty());
        assert_eq!(validate(&json!({"field": 3}), &schema).len(), 1);
    }

    #[test]
    fn every_wrong_json_type_is_named_in_the_message() {
        let schema = object_with(json!({"type": "object"}));
        for (value, shown) in [
            (json!("foo"), "string"),
            (json!(42), "integer"),
            (json!(true), "boolean"),
            (json!(1.2), "number"),
            (json!([]), "array"),
            (json!(null), "null"),
        ] {
            let causes = validate(&json!({ "field": value }), &schema);
            assert_eq!(
                messages(&causes),
                vec![format!(
                    r#"field: Invalid value: "{shown}": field in body must be of type object: "{shown}""#
                )]
            );
        }
    }

    #[test]
    fn integral_float_counts_as_integer_but_fraction_does_not() {
        let schema = object_with(json!({"type": "integer"}));
        assert!(validate(&json!({"field": 3.0}), &schema).is_empty());
        assert_eq!(
            messages(&validate(&json!({"field": 1.5}), &schema)),
            sorted(&[
                r#"field: Invalid value: "number": field in body must be of type integer: "number""#,
                r#"<nil>: Invalid value: "": Checked value must be of type integer (default format) in field"#,
            ])
        );
    }

    #[test]
    fn integer_is_accepted_where_a_number_is_expected() {
        let schema = object_with(json!({"type": "number"}));
        assert!(validate(&json!({"field": 3}), &schema).is_empty());
    }

    #[test]
    fn int_or_string_accepts_both_and_names_both_when_rejecting() {
        let schema = object_with(json!({"x-kubernetes-int-or-string": true}));
        assert!(validate(&json!({"field": 42}), &schema).is_empty());
        assert!(validate(&json!({"field": "50%"}), &schema).is_empty());
        assert_eq!(
            messages(&validate(&json!({"field": true}), &schema)),
            vec![
                r#"field: Invalid value: "boolean": field in body must be of type integer,string: "boolean""#
            ]
        );
    }

    #[test]
    fn nullable_allows_null_and_non_nullable_reports_it() {
        let nullable = object_with(json!({"type": "string", "nullable": true}));
        assert!(validate(&json!({"field": null}), &nullable).is_empty());
        let strict = object_with(json!({"type": "string"}));
        assert_eq!(
            messages(&validate(&json!({"field": null}), &strict)),
            vec![r#"field: Invalid value: "null": field in body must be of type string: "null""#]
        );
    }

    #[test]
    fn anyof_failure_reports_the_junctor_and_the_closest_branch() {
        // kube's own expectation (validation_test.go "nullable, x-kubernetes-int-or-string and
        // user-provided anyOf").
        let schema = object_with(json!({
            "nullable": true, "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}]
        }));
        assert!(validate(&json!({"field": null}), &schema).is_empty());
        assert!(validate(&json!({"field": 42}), &schema).is_empty());
        assert_eq!(
            messages(&validate(&json!({"field": 1.2}), &schema)),
            sorted(&[
                r#"<nil>: Invalid value: "": "field" must validate at least one schema (anyOf)"#,
                r#"field: Invalid value: "number": field in body must be of type integer,string: "number""#,
                r#"field: Invalid value: "number": field in body must be of type integer: "number""#,
                r#"<nil>: Invalid value: "": Checked value must be of type integer (default format) in field"#,
            ])
        );
    }

    #[test]
    fn allof_failure_with_none_validated() {
        let schema = object_with(json!({
            "nullable": true, "x-kubernetes-int-or-string": true,
            "allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}]
        }));
        assert_eq!(
            messages(&validate(&json!({"field": true}), &schema)),
            sorted(&[
                r#"<nil>: Invalid value: "": "field" must validate all the schemas (allOf). None validated"#,
                r#"<nil>: Invalid value: "": "field" must validate at least one schema (anyOf)"#,
                r#"field: Invalid value: "boolean": field in body must be of type integer,string: "boolean""#,
                r#"field: Invalid value: "boolean": field in body must be of type integer: "boolean""#,
            ])
        );
    }

    #[test]
    fn oneof_requires_exactly_one_and_not_forbids_a_match() {
        let schema = object_with(json!({
            "type": "integer",
            "oneOf": [{"minimum": 0}, {"maximum": 10}],
            "not": {"enum": [5]}
        }));
        assert!(validate(&json!({"field": 20}), &schema).is_empty());
        let both = messages(&validate(&json!({"field": 3}), &schema));
        assert_eq!(
            both,
            vec![
                r#"<nil>: Invalid value: "": "field" must validate one and only one schema (oneOf). Found 2 valid alternatives"#
            ]
        );
        let excluded = messages(&validate(&json!({"field": 5}), &schema));
        assert!(excluded.contains(
            &r#"<nil>: Invalid value: "": "field" must not validate the schema (not)"#.to_owned()
        ));
    }

    #[test]
    fn minimum_and_maximum_messages_follow_kube_openapi() {
        let schema = object_with(json!({"type": "integer", "minimum": 1, "maximum": 10}));
        assert_eq!(
            messages(&validate(&json!({"field": 0}), &schema)),
            vec!["field: Invalid value: 0: field in body should be greater than or equal to 1"]
        );
        assert_eq!(
            messages(&validate(&json!({"field": 11}), &schema)),
            vec!["field: Invalid value: 11: field in body should be less than or equal to 10"]
        );
        let exclusive = object_with(
            json!({"type": "number", "minimum": 1.5, "exclusiveMinimum": true,
            "maximum": 2000000, "exclusiveMaximum": true}),
        );
        assert_eq!(
            messages(&validate(&json!({"field": 1.5}), &exclusive)),
            vec!["field: Invalid value: 1.5: field in body should be greater than 1.5"]
        );
        assert_eq!(
            messages(&validate(&json!({"field": 2000000.0}), &exclusive)),
            vec!["field: Invalid value: 2e+06: field in body should be less than 2e+06"]
        );
    }

    #[test]
    fn string_length_and_pattern_messages() {
        let schema = object_with(
            json!({"type": "string", "minLength": 3, "maxLength": 5, "pattern": "^[a-z]+$"}),
        );
        let too_long = validate(&json!({"field": "abcdef"}), &schema);
        assert_eq!(too_long[0].reason, CauseReason::TooLong);
        assert_eq!(
            messages(&too_long),
            vec!["field: Too long: may not be more than 5 bytes"]
        );
        assert_eq!(
            messages(&validate(&json!({"field": "ab"}), &schema)),
            vec![r#"field: Invalid value: "ab": field in body should be at least 3 chars long"#]
        );
        assert_eq!(
            messages(&validate(&json!({"field": "ABC"}), &schema)),
            vec![r#"field: Invalid value: "ABC": field in body should match '^[a-z]+$'"#]
        );
        // Lengths count characters, not bytes.
        assert!(
            validate(
                &json!({"field": "ééé"}),
                &object_with(json!({"type": "string", "maxLength": 3}))
            )
            .is_empty()
        );
    }

    #[test]
    fn array_and_map_size_limits() {
        let schema = json!({"type": "object", "properties": {
            "list": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
            "map": {"type": "object", "maxProperties": 2, "additionalProperties": {"type": "string"}}
        }});
        let too_many = validate(&json!({"list": ["a", "b", "c"]}), &schema);
        assert_eq!(too_many[0].reason, CauseReason::TooMany);
        assert_eq!(
            messages(&too_many),
            vec!["list: Too many: 3: must have at most 2 items"]
        );
        assert_eq!(
            messages(&validate(&json!({"list": []}), &schema)),
            vec!["list: Invalid value: 0: list in body should have at least 1 items"]
        );
        assert_eq!(
            messages(&validate(
                &json!({"map": {"a": "1", "b": "2", "c": "3"}}),
                &schema
            )),
            vec!["map: Too many: 3: must have at most 2 items"]
        );
    }

    #[test]
    fn nested_array_item_paths_use_brackets() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "qualifiers": {"type": "object", "properties": {"cpu": {"type": "array", "items": {
                "type": "object", "properties": {"manufacturer": {"type": "string"}}}}}}}}}});
        let obj = json!({"spec": {"qualifiers": {"cpu": [{"manufacturer": 7}]}}});
        let causes = validate(&obj, &schema);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.qualifiers.cpu[0].manufacturer");
    }

    #[test]
    fn additional_properties_schema_validates_map_values() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}}});
        assert_eq!(
            messages(&validate(&json!({"spec": {"labels": {"a": 1}}}), &schema)),
            vec![
                r#"spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: "integer""#
            ]
        );
    }

    #[test]
    fn additional_properties_false_forbids_every_key() {
        let schema = object_with(json!({"type": "object", "additionalProperties": false}));
        assert_eq!(
            messages(&validate(&json!({"field": {"x": 1}}), &schema)),
            vec![r#"field: Invalid value: "x": field.x in body is a forbidden property"#]
        );
    }

    #[test]
    fn formats_are_checked_and_unsupported_ones_ignored() {
        let schema = json!({"type": "object", "properties": {
            "when": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
            "odd": {"type": "string", "format": "no-such-format"},
            "small": {"type": "integer", "format": "int32"}
        }});
        let good = json!({"when": "2024-02-29T10:00:00Z", "id": "123e4567-e89b-12d3-a456-426614174000",
            "odd": "anything", "small": 2147483647});
        assert!(validate(&good, &schema).is_empty());
        assert_eq!(
            messages(&validate(&json!({"when": "2023-02-29T10:00:00Z"}), &schema)),
            vec![
                r#"when: Invalid value: "2023-02-29T10:00:00Z": when in body must be of type date-time: "2023-02-29T10:00:00Z""#
            ]
        );
        assert_eq!(validate(&json!({"id": "nope"}), &schema).len(), 1);
        let overflow = validate(&json!({"small": 2147483648_i64}), &schema);
        assert_eq!(
            messages(&overflow),
            vec![
                r#"<nil>: Invalid value: "": Checked value must be of type integer with format int32 in small"#
            ]
        );
    }

    #[test]
    fn validate_at_prefixes_fields_and_reports_pathless_failures_at_the_base() {
        let schema = json!({"type": "object", "required": ["a"], "anyOf": [{"required": ["b"]}]});
        let causes = validate_at(&json!({}), &schema, "status");
        assert_eq!(
            messages(&causes),
            sorted(&[
                "status.a: Required value",
                "status.b: Required value",
                r#"status: Invalid value: "": "" must validate at least one schema (anyOf)"#,
            ])
        );
    }

    // --- pruning -----------------------------------------------------------------------------

    #[test]
    fn prune_removes_unknown_fields_and_reports_their_paths() {
        let mut obj = json!({"apiVersion": "v", "kind": "Server", "metadata": {"name": "a", "x": 1},
            "spec": {"accepted": true, "unknown": 1}, "extra": {"deep": 1}});
        let pruned = prune(&mut obj, &server_schema());
        assert_eq!(pruned, vec!["extra".to_owned(), "spec.unknown".to_owned()]);
        assert_eq!(
            obj,
            json!({"apiVersion": "v", "kind": "Server", "metadata": {"name": "a", "x": 1},
                "spec": {"accepted": true}})
        );
    }

    #[test]
    fn prune_keeps_root_meta_fields_even_when_the_schema_omits_them() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object"}}});
        let mut obj =
            json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "a"}, "spec": {"x": 1}});
        assert_eq!(prune(&mut obj, &schema), vec!["spec.x".to_owned()]);
        assert_eq!(
            obj,
            json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "a"}, "spec": {}})
        );
    }

    #[test]
    fn prune_keeps_unknown_fields_under_preserve_unknown_fields() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
            "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}}}});
        let mut obj = json!({"spec": {"unknown": {"any": 1}, "known": {"a": "x", "b": 2}}});
        assert_eq!(prune(&mut obj, &schema), vec!["spec.known.b".to_owned()]);
        assert_eq!(
            obj,
            json!({"spec": {"unknown": {"any": 1}, "known": {"a": "x"}}})
        );
    }

    #[test]
    fn prune_paths_index_array_items() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "list": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}}}}}});
        let mut obj = json!({"spec": {"list": [{"a": "x"}, {"a": "y", "b": 1}]}});
        assert_eq!(prune(&mut obj, &schema), vec!["spec.list[1].b".to_owned()]);
    }

    #[test]
    fn prune_keeps_meta_of_embedded_resources() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                "properties": {"spec": {"type": "object"}}}}}}});
        let mut obj = json!({"spec": {"template": {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p"}, "spec": {"x": 1}, "other": 2}}});
        let pruned = prune(&mut obj, &schema);
        assert_eq!(
            pruned,
            vec![
                "spec.template.other".to_owned(),
                "spec.template.spec.x".to_owned()
            ]
        );
        assert_eq!(obj["spec"]["template"]["metadata"], json!({"name": "p"}));
    }

    #[test]
    fn prune_drops_nulls_only_where_neither_nullable_nor_defaulted() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "plain": {"type": "string"},
            "nullable": {"type": "string", "nullable": true},
            "defaulted": {"type": "string", "default": "d"}}}}});
        let mut obj = json!({"spec": {"plain": null, "nullable": null, "defaulted": null}});
        assert!(prune(&mut obj, &schema).is_empty());
        assert_eq!(obj, json!({"spec": {"nullable": null, "defaulted": null}}));
        apply_defaults(&mut obj, &schema);
        assert_eq!(obj, json!({"spec": {"nullable": null, "defaulted": "d"}}));
        assert!(validate(&obj, &schema).is_empty());
    }

    // --- defaulting --------------------------------------------------------------------------

    #[test]
    fn defaults_fill_missing_fields_of_present_objects_only() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "bmc": {"type": "object", "properties": {"port": {"type": "integer", "default": 623}}},
                "accepted": {"type": "boolean", "default": false}}},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean", "default": false}}}}});
        let mut obj = json!({"spec": {"bmc": {}}});
        apply_defaults(&mut obj, &schema);
        assert_eq!(
            obj,
            json!({"spec": {"bmc": {"port": 623}, "accepted": false}})
        );
    }

    #[test]
    fn defaults_apply_to_array_items_and_map_values_and_recurse_into_defaults() {
        let schema = json!({"type": "object", "properties": {
            "list": {"type": "array", "items": {"type": "object",
                "properties": {"weight": {"type": "integer", "default": 1}}}},
            "made": {"type": "object", "default": {},
                "properties": {"inner": {"type": "string", "default": "x"}}},
            "map": {"type": "object", "additionalProperties": {"type": "object",
                "properties": {"on": {"type": "boolean", "default": true}}}}}});
        let mut obj = json!({"list": [{}, {"weight": 5}], "map": {"a": {}}});
        apply_defaults(&mut obj, &schema);
        assert_eq!(
            obj,
            json!({"list": [{"weight": 1}, {"weight": 5}], "map": {"a": {"on": true}},
                "made": {"inner": "x"}})
        );
    }

    // --- structural schema checks ------------------------------------------------------------

    #[test]
    fn property_without_type_is_not_structural() {
        let schema = json!({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}}}});
        assert_eq!(
            structural_errors(&schema),
            vec![
                "spec.validation.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"
            ]
        );
    }

    #[test]
    fn sound_schemas_have_no_structural_errors() {
        assert!(structural_errors(&server_schema()).is_empty());
        let int_or_string = json!({"type": "object", "properties": {
            "a": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "b": {"x-kubernetes-int-or-string": true,
                "allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"pattern": "^x"}]},
            "c": {"x-kubernetes-preserve-unknown-fields": true},
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 63}}}}});
        assert!(
            structural_errors(&int_or_string).is_empty(),
            "{:?}",
            structural_errors(&int_or_string)
        );
    }

    #[test]
    fn missing_types_are_reported_at_every_level() {
        // kube's own expectation (test/integration/validation_test.go "missing types without
        // extensions").
        let schema = json!({"properties": {
            "foo": {"properties": {"a": {}}},
            "bar": {"items": {"additionalProperties": {"properties": {"a": {}}, "items": {}}}},
            "abc": {"additionalProperties": {"properties": {"a": {"items": {"additionalProperties": {"items": null}}}}}}}});
        let base = "spec.versions[0].schema.openAPIV3Schema";
        let errors = structural_errors_at(&schema, base);
        let expected: Vec<String> = [
            "properties[foo].properties[a].type: Required value: must not be empty for specified object fields",
            "properties[foo].type: Required value: must not be empty for specified object fields",
            "properties[abc].additionalProperties.properties[a].items.additionalProperties.type: Required value: must not be empty for specified object fields",
            "properties[abc].additionalProperties.properties[a].items.type: Required value: must not be empty for specified array items",
            "properties[abc].additionalProperties.properties[a].type: Required value: must not be empty for specified object fields",
            "properties[abc].additionalProperties.type: Required value: must not be empty for specified object fields",
            "properties[abc].type: Required value: must not be empty for specified object fields",
            "properties[bar].items.additionalProperties.items.type: Required value: must not be empty for specified array items",
            "properties[bar].items.additionalProperties.properties[a].type: Required value: must not be empty for specified object fields",
            "properties[bar].items.additionalProperties.type: Required value: must not be empty for specified object fields",
            "properties[bar].items.type: Required value: must not be empty for specified array items",
            "properties[bar].type: Required value: must not be empty for specified object fields",
            "type: Required value: must not be empty at the root",
        ]
        .iter()
        .map(|e| format!("{base}.{e}"))
        .collect();
        let mut expected = expected;
        expected.sort();
        // Exactly these, in the real server's sorted order.
        assert_eq!(errors, expected);
    }

    #[test]
    fn value_validations_need_a_structural_counterpart() {
        // kube's own expectation (test/integration/validation_test.go "structural incomplete").
        let schema = json!({"type": "object",
            "properties": {
                "b": {"type": "object", "properties": {"b": {"type": "array"}}},
                "c": {"type": "array", "items": {"type": "object"}},
                "d": {"type": "array"}},
            "not": {"properties": {
                "a": {},
                "b": {"not": {"properties": {"a": {}, "b": {"items": {}}}}},
                "c": {"items": {"not": {"items": {"properties": {"a": {}}}}}},
                "d": {"items": {}}}},
            "allOf": [{"properties": {"e": {}}}],
            "anyOf": [{"properties": {"f": {}}}],
            "oneOf": [{"properties": {"g": {}}}]});
        let base = "spec.versions[0].schema.openAPIV3Schema";
        let errors = structural_errors_at(&schema, base);
        for expected in [
            "properties[d].items: Required value: because it is defined in spec.versions[0].schema.openAPIV3Schema.not.properties[d].items",
            "properties[a]: Required value: because it is defined in spec.versions[0].schema.openAPIV3Schema.not.properties[a]",
            "properties[b].properties[a]: Required value: because it is defined in spec.versions[0].schema.openAPIV3Schema.not.properties[b].not.properties[a]",
            "properties[b].properties[b].items: Required value: because it is defined in spec.versions[0].schema.openAPIV3Schema.not.properties[b].not.properties[b].items",
            "properties[c].items.items: Required value: because it is defined in spec.versions[0].schema.openAPIV3Schema.not.properties[c].items.not.items",
            "properties[e]: Required value: because it is defined in spec.versions[0].schema.openAPIV3Schema.allOf[0].properties[e]",
            "properties[f]: Required value: because it is defined in spec.versions[0].schema.openAPIV3Schema.anyOf[0].properties[f]",
            "properties[g]: Required value: because it is defined in spec.versions[0].schema.openAPIV3Schema.oneOf[0].properties[g]",
        ] {
            let line = format!("{base}.{expected}");
            assert!(errors.contains(&line), "missing {line} in {errors:#?}");
        }
    }

    #[test]
    fn root_must_be_an_object_without_additional_properties() {
        assert_eq!(
            structural_errors(&json!({"type": "integer"})),
            vec![
                r#"spec.validation.openAPIV3Schema.type: Invalid value: "integer": must be object at the root"#
            ]
        );
        assert_eq!(
            structural_errors(&json!({"type": "object", "additionalProperties": false})),
            vec![
                "spec.validation.openAPIV3Schema.additionalProperties: Forbidden: must not be used at the root"
            ]
        );
    }

    #[test]
    fn arrays_need_items() {
        let schema = json!({"type": "object", "properties": {"list": {"type": "array"}}});
        assert_eq!(
            structural_errors(&schema),
            vec![
                "spec.validation.openAPIV3Schema.properties[list].items: Required value: must be specified"
            ]
        );
    }

    #[test]
    fn root_metadata_may_only_restrict_name_and_generate_name() {
        let schema = json!({"type": "object", "properties": {"metadata": {"type": "object",
            "properties": {"labels": {"type": "object"}}}}});
        assert_eq!(
            structural_errors(&schema),
            vec![
                "spec.validation.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"
            ]
        );
    }

    #[test]
    fn shapes_inside_value_validations_are_forbidden() {
        let schema = json!({"type": "object", "properties": {"foo": {"type": "string"}},
            "not": {"type": "string", "additionalProperties": true, "title": "hello",
                "description": "world", "nullable": true, "default": "x"},
            "anyOf": [{"items": {"type": "string"}}]});
        let errors = structural_errors(&schema);
        let base = "spec.validation.openAPIV3Schema";
        for expected in [
            "not.type: Forbidden: must be empty to be structural",
            "not.additionalProperties: Forbidden: must be undefined to be structural",
            "not.title: Forbidden: must be empty to be structural",
            "not.description: Forbidden: must be empty to be structural",
            "not.nullable: Forbidden: must be false to be structural",
            "not.default: Forbidden: must be undefined to be structural",
            "anyOf[0].items.type: Forbidden: must be empty to be structural",
            "items: Required value: because it is defined in spec.validation.openAPIV3Schema.anyOf[0].items",
        ] {
            let line = format!("{base}.{expected}");
            assert!(errors.contains(&line), "missing {line} in {errors:#?}");
        }
    }

    #[test]
    fn properties_and_additional_properties_are_mutually_exclusive() {
        let schema = json!({"type": "object", "properties": {"m": {"type": "object",
            "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}}});
        assert_eq!(
            structural_errors(&schema),
            vec![
                "spec.validation.openAPIV3Schema.properties[m].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
            ]
        );
    }

    #[test]
    fn value_validation_properties_must_exist_structurally() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}},
            "oneOf": [{"properties": {"g": {}}}]});
        assert_eq!(
            structural_errors(&schema),
            vec![
                "spec.validation.openAPIV3Schema.properties[g]: Required value: because it is defined in spec.validation.openAPIV3Schema.oneOf[0].properties[g]"
            ]
        );
    }

    #[test]
    fn bad_patterns_and_unknown_types_are_rejected() {
        let pattern =
            json!({"type": "object", "properties": {"foo": {"type": "string", "pattern": "+"}}});
        let errors = structural_errors(&pattern);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with(
            r#"spec.validation.openAPIV3Schema.properties[foo].pattern: Invalid value: "+": must be a valid regular expression, but isn't: "#
        ));
        let ty = json!({"type": "object", "properties": {"foo": {"type": "str"}}});
        assert_eq!(
            structural_errors(&ty),
            vec![
                r#"spec.validation.openAPIV3Schema.properties[foo].type: Unsupported value: "str": supported values: "array", "boolean", "integer", "number", "object", "string""#
            ]
        );
    }

    #[test]
    fn defaults_must_be_valid_and_pruned() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "port": {"type": "integer", "default": "x"},
            "bmc": {"type": "object", "properties": {"a": {"type": "string"}}, "default": {"b": 1}}}}}});
        let base = "spec.validation.openAPIV3Schema.properties[spec].properties";
        assert_eq!(
            structural_errors(&schema),
            vec![
                // The default is validated on its own, so its path in the message is empty.
                format!(
                    r#"{base}[port].default: Invalid value: "string":  in body must be of type integer: "string""#
                ),
                format!(
                    r#"{base}[bmc].default: Invalid value: {{"b":1}}: must not have unknown fields"#
                ),
            ]
        );
    }

    #[test]
    fn defaults_in_top_level_metadata_are_forbidden() {
        let schema = json!({"type": "object", "properties": {"metadata": {"type": "object", "default": {}}}});
        assert_eq!(
            structural_errors(&schema),
            vec![
                "spec.validation.openAPIV3Schema.properties[metadata].default: Forbidden: must not be set in top-level metadata"
            ]
        );
    }

    #[test]
    fn nullable_root_and_explicit_false_preserve_are_rejected() {
        let schema = json!({"type": "object", "nullable": true,
            "properties": {"a": {"type": "object", "x-kubernetes-preserve-unknown-fields": false}}});
        assert_eq!(
            structural_errors(&schema),
            vec![
                "spec.validation.openAPIV3Schema.nullable: Forbidden: nullable cannot be true at the root",
                "spec.validation.openAPIV3Schema.properties[a].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined",
            ]
        );
    }

    // --- Go formatting -----------------------------------------------------------------------

    #[test]
    fn floats_print_like_go_percent_v() {
        for (f, text) in [
            (1.5, "1.5"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.25, "-2.25"),
            (0.0, "0"),
        ] {
            assert_eq!(go_float(f), text);
        }
    }

    #[test]
    fn enum_numbers_print_like_go_json() {
        for (n, text) in [
            (json!(1.0), "1"),
            (json!(2.5), "2.5"),
            (json!(1e21), "1e+21"),
            (json!(1e-7), "1e-7"),
            (json!(7), "7"),
        ] {
            let Value::Number(n) = n else {
                panic!("not a number")
            };
            assert_eq!(go_json_number(&n), text);
        }
    }

    #[test]
    fn strings_quote_like_go() {
        assert_eq!(go_quote("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\x01é""#);
    }
}
