//! `meta.k8s.io/v1` Table responses (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`),
//! which `kubectl get` prints. Columns and cells follow kube-apiserver: the CRD table convertor
//! for custom resources, the server-side printers for the core kinds, and the default
//! Name/Created At convertor for everything else.
//!
//! Cells are what the real server sends, not what kubectl finally shows: a CRD `date` column is
//! already a human age ("5m"), the default convertor's "Created At" is an RFC 3339 string, and
//! counts are JSON integers even where the column says `string`.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use super::jsonpath::{self, JsonPath, JsonPathError};

/// `ObjectMeta.name` documentation, the description of every Name column.
pub const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when \
creating resources, although some resources may allow a client to request the generation of an \
appropriate name automatically. Name is primarily intended for creation idempotence and \
configuration definition. Cannot be updated. More info: \
https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// `ObjectMeta.creationTimestamp` documentation, the description of Age and Created At columns.
pub const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing \
the server time when this object was created. It is not guaranteed to be set in happens-before \
order across separate operations. Clients may not set this value. It is represented in RFC3339 \
form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: \
https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

const SECRET_TYPE_DESCRIPTION: &str = "Used to facilitate programmatic handling of secret data. \
More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";
const SECRET_DATA_DESCRIPTION: &str = "Data contains the secret data. Each key must consist of \
alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 \
encoded string, representing the arbitrary (possibly non-string) data value here. Described in \
https://tools.ietf.org/html/rfc4648#section-4";
const CONFIGMAP_DATA_DESCRIPTION: &str = "Data contains the configuration data. Each key must \
consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must \
use the BinaryData field. The keys stored in Data must not overlap with the keys in the \
BinaryData field, this is enforced during validation process.";
const EVENT_LAST_TIMESTAMP_DESCRIPTION: &str =
    "The time at which the most recent occurrence of this event was recorded.";
const EVENT_TYPE_DESCRIPTION: &str =
    "Type of this event (Normal, Warning), new types could be added in the future";
const EVENT_REASON_DESCRIPTION: &str = "This should be a short, machine understandable string \
that gives the reason for the transition into the object's current status.";
const EVENT_INVOLVED_OBJECT_DESCRIPTION: &str = "The object that this event is about.";
const EVENT_FIELD_PATH_DESCRIPTION: &str = "If referring to a piece of an object instead of an \
entire object, this string should contain a valid JSON/Go field access statement, such as \
desiredState.manifest.containers[2]. For example, if the object reference is to a container \
within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers \
to the name of the container that triggered the event) or if no container name is specified \
\"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have \
some well-defined way of referencing a part of an object.";
const EVENT_SOURCE_DESCRIPTION: &str =
    "The component reporting this event. Should be a short machine understandable string.";
const EVENT_MESSAGE_DESCRIPTION: &str =
    "A human-readable description of the status of this operation.";
const EVENT_FIRST_TIMESTAMP_DESCRIPTION: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
const EVENT_COUNT_DESCRIPTION: &str = "The number of times this event has occurred.";

/// What a user can get wrong in printer columns or table query parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error(
        "additionalPrinterColumns[{index}] has no {field}: every printer column needs a name, a \
         type and a jsonPath"
    )]
    MissingColumnField { index: usize, field: &'static str },
    #[error("unrecognized column definition {json_path:?} (printer column {column:?}): {reason}")]
    InvalidColumnPath {
        column: String,
        json_path: String,
        reason: JsonPathError,
    },
    #[error("unrecognized includeObject value: {value:?}: use None, Metadata or Object")]
    UnknownIncludeObject { value: String },
}

/// One column definition and where its cells come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    pub format: String,
    pub description: String,
    /// 0 for columns kubectl always shows, higher for `-o wide` only.
    pub priority: i32,
    pub source: CellSource,
}

/// How a column's cell is computed from an object.
#[derive(Debug, Clone, PartialEq)]
pub enum CellSource {
    /// `metadata.name`, or "" when absent.
    Name,
    /// A CRD printer column: the first JSONPath result, converted according to the column type
    /// as the CRD table convertor does; `null` when nothing matches.
    JsonPath(JsonPath),
    /// A string field of a core kind; "" when absent, like an unset Go string.
    Field(&'static [&'static str]),
    /// The number of keys in the maps at these paths, added up.
    KeyCount(&'static [&'static [&'static str]]),
    /// Time since `metadata.creationTimestamp` as a human duration, or `<unknown>`.
    Age,
    /// `metadata.creationTimestamp` as RFC 3339 in UTC (the default convertor's Created At).
    CreatedAt,
    /// A cell of the core Event printer.
    Event(EventCell),
}

/// The derived cells of the Event printer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventCell {
    /// Age of the last occurrence: `series.lastObservedTime`, else `lastTimestamp`, else First Seen.
    LastSeen,
    /// Age of `firstTimestamp`, else of `eventTime`.
    FirstSeen,
    /// `kind/name` of the involved object, the kind in lower case.
    Object,
    /// `component, host` of the source, falling back to `reportingComponent`/`reportingInstance`.
    Source,
    /// The message without surrounding white space.
    Message,
    /// `series.count`, else `count`, with 0 shown as 1.
    Count,
}

/// The `includeObject` query parameter: what each row carries besides its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// `"object": null`.
    None,
    /// A `PartialObjectMetadata` holding the object's metadata (the server's default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter; absent or empty means `Metadata`.
    pub fn from_query(value: Option<&str>) -> Result<IncludeObject, TableError> {
        match value.unwrap_or_default() {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(TableError::UnknownIncludeObject {
                value: other.to_owned(),
            }),
        }
    }
}

fn column(
    name: &str,
    type_: &str,
    format: &str,
    description: &str,
    priority: i32,
    source: CellSource,
) -> Column {
    Column {
        name: name.to_owned(),
        type_: type_.to_owned(),
        format: format.to_owned(),
        description: description.to_owned(),
        priority,
        source,
    }
}

fn name_column(priority: i32) -> Column {
    column(
        "Name",
        "string",
        "name",
        NAME_DESCRIPTION,
        priority,
        CellSource::Name,
    )
}

fn age_column() -> Column {
    column(
        "Age",
        "string",
        "",
        CREATION_TIMESTAMP_DESCRIPTION,
        0,
        CellSource::Age,
    )
}

/// Columns of a custom resource version from its `additionalPrinterColumns`: Name first, then
/// each printer column; Name and Age when the version declares none.
///
/// The real server keeps the columns before a bad JSONPath and drops the rest; here the whole
/// definition is rejected so that the caller can report it.
pub fn crd_columns(printer_columns: &[Value]) -> Result<Vec<Column>, TableError> {
    let mut columns = vec![name_column(0)];
    if printer_columns.is_empty() {
        let path = jsonpath::parse(".metadata.creationTimestamp")
            .expect("the default Age column's path is a constant, valid JSONPath");
        columns.push(column(
            "Age",
            "date",
            "",
            CREATION_TIMESTAMP_DESCRIPTION,
            0,
            CellSource::JsonPath(path),
        ));
        return Ok(columns);
    }
    for (index, definition) in printer_columns.iter().enumerate() {
        let text = |key: &str| definition.get(key).and_then(Value::as_str);
        let required = |field: &'static str| {
            text(field).ok_or(TableError::MissingColumnField { index, field })
        };
        let name = required("name")?;
        let type_ = required("type")?;
        let json_path = required("jsonPath")?;
        let path = jsonpath::parse(json_path).map_err(|reason| TableError::InvalidColumnPath {
            column: name.to_owned(),
            json_path: json_path.to_owned(),
            reason,
        })?;
        let description = match text("description") {
            Some(d) if !d.is_empty() => d.to_owned(),
            _ => format!("Custom resource definition column (in JSONPath format): {json_path}"),
        };
        let priority = definition
            .get("priority")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0);
        columns.push(Column {
            name: name.to_owned(),
            type_: type_.to_owned(),
            format: text("format").unwrap_or_default().to_owned(),
            description,
            priority,
            source: CellSource::JsonPath(path),
        });
    }
    Ok(columns)
}

/// Columns of kube-apiserver's default table convertor, used for kinds without a printer
/// (CustomResourceDefinition in the versions kubectl 1.32 meets).
pub fn default_columns() -> Vec<Column> {
    vec![
        name_column(0),
        column(
            "Created At",
            "date",
            "",
            CREATION_TIMESTAMP_DESCRIPTION,
            0,
            CellSource::CreatedAt,
        ),
    ]
}

/// Columns of the server-side printer for a core kind this server serves, by `kind`. Events are
/// the `core/v1` form; the server prints every column and kubectl hides priority > 0 unless
/// `-o wide`.
pub fn builtin_columns(kind: &str) -> Option<Vec<Column>> {
    let columns = match kind {
        "Namespace" => vec![
            name_column(0),
            column(
                "Status",
                "string",
                "",
                "The status of the namespace",
                0,
                CellSource::Field(&["status", "phase"]),
            ),
            age_column(),
        ],
        "Secret" => vec![
            name_column(0),
            column(
                "Type",
                "string",
                "",
                SECRET_TYPE_DESCRIPTION,
                0,
                CellSource::Field(&["type"]),
            ),
            column(
                "Data",
                "string",
                "",
                SECRET_DATA_DESCRIPTION,
                0,
                CellSource::KeyCount(&[&["data"]]),
            ),
            age_column(),
        ],
        "ConfigMap" => vec![
            name_column(0),
            column(
                "Data",
                "string",
                "",
                CONFIGMAP_DATA_DESCRIPTION,
                0,
                CellSource::KeyCount(&[&["data"], &["binaryData"]]),
            ),
            age_column(),
        ],
        // kube-apiserver's printer for Leases.
        "Lease" => vec![
            name_column(0),
            column(
                "Holder",
                "string",
                "",
                "The holder of the lease",
                0,
                CellSource::Field(&["spec", "holderIdentity"]),
            ),
            age_column(),
        ],
        "Event" => vec![
            event_column(
                "Last Seen",
                EVENT_LAST_TIMESTAMP_DESCRIPTION,
                0,
                EventCell::LastSeen,
            ),
            column(
                "Type",
                "string",
                "",
                EVENT_TYPE_DESCRIPTION,
                0,
                CellSource::Field(&["type"]),
            ),
            column(
                "Reason",
                "string",
                "",
                EVENT_REASON_DESCRIPTION,
                0,
                CellSource::Field(&["reason"]),
            ),
            event_column(
                "Object",
                EVENT_INVOLVED_OBJECT_DESCRIPTION,
                0,
                EventCell::Object,
            ),
            column(
                "Subobject",
                "string",
                "",
                EVENT_FIELD_PATH_DESCRIPTION,
                1,
                CellSource::Field(&["involvedObject", "fieldPath"]),
            ),
            event_column("Source", EVENT_SOURCE_DESCRIPTION, 1, EventCell::Source),
            event_column("Message", EVENT_MESSAGE_DESCRIPTION, 0, EventCell::Message),
            event_column(
                "First Seen",
                EVENT_FIRST_TIMESTAMP_DESCRIPTION,
                1,
                EventCell::FirstSeen,
            ),
            event_column("Count", EVENT_COUNT_DESCRIPTION, 1, EventCell::Count),
            name_column(1),
        ],
        "CustomResourceDefinition" => default_columns(),
        _ => return None,
    };
    Some(columns)
}

fn event_column(name: &str, description: &str, priority: i32, cell: EventCell) -> Column {
    column(
        name,
        "string",
        "",
        description,
        priority,
        CellSource::Event(cell),
    )
}

/// Builds the Table for `objects` (one for a get, the items for a list). `list_meta` supplies
/// `resourceVersion`, `continue` and `remainingItemCount`; empty ones are left out.
pub fn build_table(
    columns: &[Column],
    objects: &[Value],
    include: IncludeObject,
    list_meta: Value,
    now: Timestamp,
) -> Value {
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let cells: Vec<Value> = columns.iter().map(|c| cell(c, object, now)).collect();
            json!({"cells": cells, "object": row_object(object, include)})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": table_metadata(&list_meta),
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// The ListMeta fields a Table carries, omitted when empty as Go's `omitempty` does.
fn table_metadata(list_meta: &Value) -> Value {
    let mut metadata = Map::new();
    for key in ["resourceVersion", "continue"] {
        if let Some(s) = list_meta
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            metadata.insert(key.to_owned(), Value::from(s));
        }
    }
    if let Some(count) = list_meta
        .get("remainingItemCount")
        .filter(|v| v.is_number())
    {
        metadata.insert("remainingItemCount".to_owned(), count.clone());
    }
    Value::Object(metadata)
}

fn row_object(object: &Value, include: IncludeObject) -> Value {
    match include {
        // kube-apiserver leaves the RawExtension empty, which Go encodes as `null`.
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
        IncludeObject::Object => object.clone(),
    }
}

fn cell(column: &Column, object: &Value, now: Timestamp) -> Value {
    match &column.source {
        CellSource::Name => Value::from(text_at(object, &["metadata", "name"])),
        CellSource::JsonPath(path) => printer_column_cell(&column.type_, path, object, now),
        CellSource::Field(path) => Value::from(text_at(object, path)),
        CellSource::KeyCount(paths) => Value::from(
            paths
                .iter()
                .map(|p| {
                    value_at(object, p)
                        .and_then(Value::as_object)
                        .map_or(0, Map::len)
                })
                .sum::<usize>(),
        ),
        CellSource::Age => Value::from(age(creation_timestamp(object), now)),
        CellSource::CreatedAt => Value::from(match creation_timestamp(object) {
            Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            // Go formats the zero time.
            None => "0001-01-01T00:00:00Z".to_owned(),
        }),
        CellSource::Event(which) => event_cell(*which, object, now),
    }
}

fn value_at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(object, |v, key| v.get(key))
}

fn text_at<'a>(object: &'a Value, path: &[&str]) -> &'a str {
    value_at(object, path)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn creation_timestamp(object: &Value) -> Option<Timestamp> {
    timestamp_at(object, &["metadata", "creationTimestamp"])
}

/// A set, parseable, non-zero timestamp; Go treats all others as the zero time.
fn timestamp_at(object: &Value, path: &[&str]) -> Option<Timestamp> {
    value_at(object, path)
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Timestamp>().ok())
        .filter(|t| !is_go_zero_time(*t))
}

/// `0001-01-01T00:00:00Z`, Go's zero `time.Time`, which printers show as `<unknown>`.
fn is_go_zero_time(t: Timestamp) -> bool {
    const GO_ZERO_UNIX_SECONDS: i64 = -62_135_596_800;
    t.as_second() == GO_ZERO_UNIX_SECONDS && t.subsec_nanosecond() == 0
}

/// The printers' `translateTimestampSince`.
fn age(timestamp: Option<Timestamp>, now: Timestamp) -> String {
    match timestamp {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".to_owned(),
    }
}

/// A cell of a CRD printer column, as the CRD table convertor computes it.
fn printer_column_cell(type_: &str, path: &JsonPath, object: &Value, now: Timestamp) -> Value {
    let Some(value) = path.eval(object).into_iter().next() else {
        return Value::Null;
    };
    match (type_, value) {
        ("string", v) => Value::String(go_text(v)),
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::from(i),
            // Go's int64(float64) truncates toward zero.
            None => n.as_f64().map_or(Value::Null, |f| Value::from(f as i64)),
        },
        ("number", Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => n.as_f64().map_or(Value::Null, go_float_value),
        },
        ("boolean", Value::Bool(b)) => Value::Bool(*b),
        ("date", Value::String(s)) => Value::String(date_cell(s, now)),
        _ => Value::Null,
    }
}

/// A `date` printer column: the age of an RFC 3339 timestamp, as `metav1.Time` parses it.
fn date_cell(s: &str, now: Timestamp) -> String {
    if s.is_empty() || s == "null" {
        return "<unknown>".to_owned();
    }
    match s.parse::<Timestamp>() {
        Ok(t) if is_go_zero_time(t) => "<unknown>".to_owned(),
        Ok(t) => human_duration(now.duration_since(t)),
        Err(_) => "<invalid>".to_owned(),
    }
}

/// A float as Go's encoding/json writes it, which drops the `.0` of whole numbers.
fn go_float_value(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// A value as client-go's JSONPath printer writes it into a `string` column: strings verbatim,
/// scalars with Go's `fmt`, objects and arrays as Go-encoded JSON, and null as `<no value>`.
fn go_text(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.as_f64().map(go_format_float).unwrap_or_default(),
        },
        Value::Array(_) | Value::Object(_) => {
            let mut out = String::new();
            go_json(v, &mut out);
            out
        }
    }
}

/// Go's `%v` for a float64: shortest digits, exponent form outside 1e-4 ≤ |f| < 1e6.
fn go_format_float(f: f64) -> String {
    let scientific = format!("{f:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return f.to_string();
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if f != 0.0 && !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        f.to_string()
    }
}

/// Go's encoding/json: object keys sorted, `<`, `>`, `&`, U+2028 and U+2029 escaped.
fn go_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => out.push_str(&i.to_string()),
            None => out.push_str(&go_json_float(n.as_f64().unwrap_or_default())),
        },
        Value::String(s) => go_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(key, out);
                out.push(':');
                go_json(value, out);
            }
            out.push('}');
        }
    }
}

/// encoding/json's float64: plain decimals between 1e-6 and 1e21, else `1e+21` / `1e-7`.
fn go_json_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let scientific = format!("{f:e}");
        if let Some((mantissa, exponent)) = scientific.split_once('e') {
            return match exponent.strip_prefix('-') {
                Some(digits) => format!("{mantissa}e-{digits}"),
                None => format!("{mantissa}e+{exponent}"),
            };
        }
    }
    f.to_string()
}

fn go_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn event_cell(which: EventCell, event: &Value, now: Timestamp) -> Value {
    let series = event.get("series").filter(|s| s.is_object());
    let first_seen = || match timestamp_at(event, &["firstTimestamp"]) {
        Some(t) => age(Some(t), now),
        None => age(timestamp_at(event, &["eventTime"]), now),
    };
    match which {
        EventCell::LastSeen => Value::from(match series {
            Some(series) => age(timestamp_at(series, &["lastObservedTime"]), now),
            None => match timestamp_at(event, &["lastTimestamp"]) {
                Some(t) => age(Some(t), now),
                None => first_seen(),
            },
        }),
        EventCell::FirstSeen => Value::from(first_seen()),
        EventCell::Object => {
            let kind = text_at(event, &["involvedObject", "kind"]).to_lowercase();
            let name = text_at(event, &["involvedObject", "name"]);
            Value::from(if name.is_empty() {
                kind
            } else {
                format!("{kind}/{name}")
            })
        }
        EventCell::Source => {
            let first_non_empty = |a: &'static [&'static str], b: &'static [&'static str]| {
                let first = text_at(event, a);
                if first.is_empty() {
                    text_at(event, b)
                } else {
                    first
                }
            };
            let component = first_non_empty(&["source", "component"], &["reportingComponent"]);
            let instance = first_non_empty(&["source", "host"], &["reportingInstance"]);
            Value::from(if instance.is_empty() {
                component.to_owned()
            } else {
                format!("{component}, {instance}")
            })
        }
        EventCell::Message => Value::from(text_at(event, &["message"]).trim()),
        EventCell::Count => {
            let count = match series {
                Some(series) => series.get("count").and_then(Value::as_i64).unwrap_or(0),
                // Events written through events.k8s.io/v1 leave `count` unset.
                None => match event.get("count").and_then(Value::as_i64).unwrap_or(0) {
                    0 => 1,
                    n => n,
                },
            };
            Value::from(count)
        }
    }
}

/// k8s.io/apimachinery/pkg/util/duration.HumanDuration: about two significant figures, e.g.
/// `45s`, `3m10s`, `70m`, `5h3m`, `2d1h`, `367d`, `2y1d`.
pub fn human_duration(d: SignedDuration) -> String {
    // Up to two seconds in the future still reads as now, to tolerate clock skew.
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            days => format!("{}y{days}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn server_columns() -> Vec<Value> {
        vec![
            json!({"name": "Hostname", "type": "string", "jsonPath": ".spec.hostname"}),
            json!({"name": "Accepted", "type": "boolean", "jsonPath": ".spec.accepted"}),
            json!({"name": "CPUs", "type": "integer", "jsonPath": ".status.cpus", "priority": 1,
                   "description": "Logical processors"}),
            json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
        ]
    }

    fn server(name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "metal.sidero.dev/v1alpha2",
            "kind": "Server",
            "metadata": {"name": name, "creationTimestamp": "2025-06-01T11:55:00Z",
                         "resourceVersion": "7"},
            "spec": spec,
        })
    }

    fn cells(table: &Value, row: usize) -> Vec<Value> {
        table["rows"][row]["cells"].as_array().unwrap().clone()
    }

    #[test]
    fn crd_columns_prepend_name_and_carry_priority_and_descriptions() {
        let columns = crd_columns(&server_columns()).unwrap();
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Name", "Hostname", "Accepted", "CPUs", "Age"]);
        assert_eq!(columns[0].format, "name");
        assert!(
            columns[0]
                .description
                .starts_with("Name must be unique within a namespace.")
        );
        assert_eq!(columns[3].priority, 1);
        assert_eq!(columns[3].description, "Logical processors");
        assert_eq!(
            columns[1].description,
            "Custom resource definition column (in JSONPath format): .spec.hostname"
        );
    }

    #[test]
    fn crd_without_printer_columns_gets_name_and_age() {
        let columns = crd_columns(&[]).unwrap();
        let table = build_table(
            &columns,
            &[server("a", json!({}))],
            IncludeObject::None,
            json!({}),
            now(),
        );
        assert_eq!(table["columnDefinitions"][1]["name"], "Age");
        assert_eq!(table["columnDefinitions"][1]["type"], "date");
        assert_eq!(cells(&table, 0), [json!("a"), json!("5m")]);
    }

    #[test]
    fn server_rows_have_typed_cells_and_null_for_missing_fields() {
        let columns = crd_columns(&server_columns()).unwrap();
        let mut complete = server("srv-1", json!({"hostname": "node-1", "accepted": true}));
        complete["status"] = json!({"cpus": 8});
        let bare = server("srv-2", json!({}));
        let table = build_table(
            &columns,
            &[complete, bare],
            IncludeObject::Metadata,
            json!({"resourceVersion": "42", "continue": ""}),
            now(),
        );
        assert_eq!(
            cells(&table, 0),
            [
                json!("srv-1"),
                json!("node-1"),
                json!(true),
                json!(8),
                json!("5m")
            ]
        );
        assert_eq!(
            cells(&table, 1),
            [
                json!("srv-2"),
                Value::Null,
                Value::Null,
                Value::Null,
                json!("5m")
            ]
        );
        assert_eq!(table["columnDefinitions"][3]["priority"], 1);
        assert_eq!(table["metadata"], json!({"resourceVersion": "42"}));
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    }

    #[test]
    fn include_object_controls_the_row_object() {
        let columns = crd_columns(&[]).unwrap();
        let object = server("s", json!({"hostname": "h"}));
        let row = |include| {
            build_table(
                &columns,
                std::slice::from_ref(&object),
                include,
                json!({}),
                now(),
            )["rows"][0]
                .clone()
        };
        assert_eq!(
            row(IncludeObject::Metadata)["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": object["metadata"]})
        );
        assert_eq!(row(IncludeObject::Object)["object"], object);
        assert_eq!(row(IncludeObject::None)["object"], Value::Null);
        assert_eq!(IncludeObject::from_query(None), Ok(IncludeObject::Metadata));
        assert_eq!(
            IncludeObject::from_query(Some("None")),
            Ok(IncludeObject::None)
        );
        assert!(matches!(
            IncludeObject::from_query(Some("all")),
            Err(TableError::UnknownIncludeObject { .. })
        ));
    }

    #[test]
    fn date_cells_are_ages_or_markers() {
        let column = |path: &str| {
            crd_columns(&[json!({"name": "When", "type": "date", "jsonPath": path})]).unwrap()
        };
        let object = json!({"metadata": {"name": "x"},
                            "t": {"ok": "2025-06-01T09:00:00Z", "bad": "yesterday", "empty": ""}});
        let when = |path| {
            cells(
                &build_table(
                    &column(path),
                    std::slice::from_ref(&object),
                    IncludeObject::None,
                    json!({}),
                    now(),
                ),
                0,
            )[1]
            .clone()
        };
        assert_eq!(when(".t.ok"), json!("3h"));
        assert_eq!(when(".t.bad"), json!("<invalid>"));
        assert_eq!(when(".t.empty"), json!("<unknown>"));
        assert_eq!(when(".t.missing"), Value::Null);
    }

    #[test]
    fn string_columns_print_values_like_client_go() {
        let object = json!({"metadata": {"name": "x"},
                            "v": {"n": 3, "f": 2.5, "big": 1234567.0, "b": false, "z": null,
                                  "o": {"b": "<1>", "a": [1, 2.0]}}});
        let text = |path: &str| {
            let columns =
                crd_columns(&[json!({"name": "V", "type": "string", "jsonPath": path})]).unwrap();
            cells(
                &build_table(
                    &columns,
                    std::slice::from_ref(&object),
                    IncludeObject::None,
                    json!({}),
                    now(),
                ),
                0,
            )[1]
            .clone()
        };
        assert_eq!(text(".v.n"), json!("3"));
        assert_eq!(text(".v.f"), json!("2.5"));
        assert_eq!(text(".v.big"), json!("1.234567e+06"));
        assert_eq!(text(".v.b"), json!("false"));
        assert_eq!(text(".v.z"), json!("<no value>"));
        assert_eq!(text(".v.o"), json!(r#"{"a":[1,2],"b":"\u003c1\u003e"}"#));
    }

    #[test]
    fn numeric_columns_convert_like_the_crd_convertor() {
        let object = json!({"metadata": {"name": "x"}, "v": {"f": 2.9, "i": 4, "s": "4"}});
        let value = |type_: &str, path: &str| {
            let columns =
                crd_columns(&[json!({"name": "V", "type": type_, "jsonPath": path})]).unwrap();
            cells(
                &build_table(
                    &columns,
                    std::slice::from_ref(&object),
                    IncludeObject::None,
                    json!({}),
                    now(),
                ),
                0,
            )[1]
            .clone()
        };
        assert_eq!(value("integer", ".v.f"), json!(2));
        assert_eq!(value("integer", ".v.s"), Value::Null);
        assert_eq!(value("number", ".v.i"), json!(4));
        assert_eq!(value("number", ".v.f"), json!(2.9));
        assert_eq!(value("boolean", ".v.i"), Value::Null);
    }

    #[test]
    fn invalid_printer_column_is_reported_with_its_path() {
        let err = crd_columns(&[json!({"name": "Bad", "type": "string", "jsonPath": ".a[x"})])
            .unwrap_err();
        assert!(matches!(err, TableError::InvalidColumnPath { ref column, .. } if column == "Bad"));
        assert!(err.to_string().contains("\".a[x\""), "{err}");
        let missing = crd_columns(&[json!({"name": "NoPath", "type": "string"})]).unwrap_err();
        assert_eq!(
            missing,
            TableError::MissingColumnField {
                index: 0,
                field: "jsonPath"
            }
        );
    }

    #[test]
    fn builtin_columns_for_core_kinds() {
        let secret = json!({"metadata": {"name": "s", "creationTimestamp": "2025-05-30T12:00:00Z"},
                            "type": "Opaque", "data": {"a": "", "b": ""}});
        let columns = builtin_columns("Secret").unwrap();
        let table = build_table(&columns, &[secret], IncludeObject::None, json!({}), now());
        assert_eq!(
            cells(&table, 0),
            [json!("s"), json!("Opaque"), json!(2), json!("2d")]
        );

        let config_map = json!({"metadata": {"name": "c"}, "data": {"a": ""},
                                "binaryData": {"b": ""}});
        let columns = builtin_columns("ConfigMap").unwrap();
        let table = build_table(
            &columns,
            &[config_map],
            IncludeObject::None,
            json!({}),
            now(),
        );
        assert_eq!(cells(&table, 0), [json!("c"), json!(2), json!("<unknown>")]);

        let namespace = json!({"metadata": {"name": "default",
                                            "creationTimestamp": "2025-06-01T11:59:30Z"},
                               "status": {"phase": "Active"}});
        let columns = builtin_columns("Namespace").unwrap();
        let table = build_table(
            &columns,
            &[namespace],
            IncludeObject::None,
            json!({}),
            now(),
        );
        assert_eq!(
            cells(&table, 0),
            [json!("default"), json!("Active"), json!("30s")]
        );

        let crd = json!({"metadata": {"name": "servers.metal.sidero.dev",
                                      "creationTimestamp": "2025-01-02T03:04:05.678Z"}});
        let columns = builtin_columns("CustomResourceDefinition").unwrap();
        let table = build_table(&columns, &[crd], IncludeObject::None, json!({}), now());
        assert_eq!(table["columnDefinitions"][1]["name"], "Created At");
        assert_eq!(
            cells(&table, 0),
            [
                json!("servers.metal.sidero.dev"),
                json!("2025-01-02T03:04:05Z")
            ]
        );
        assert!(builtin_columns("Pod").is_none());
    }

    #[test]
    fn event_columns_match_the_server_printer() {
        let event = json!({
            "metadata": {"name": "srv.1"},
            "involvedObject": {"kind": "Server", "name": "srv", "fieldPath": "spec"},
            "reason": "Accepted", "type": "Normal", "message": "  accepted by policy \n",
            "source": {"component": ""}, "reportingComponent": "siderite",
            "reportingInstance": "node-a",
            "firstTimestamp": "2025-06-01T09:00:00Z", "lastTimestamp": null,
        });
        let columns = builtin_columns("Event").unwrap();
        let names: Vec<(&str, i32)> = columns
            .iter()
            .map(|c| (c.name.as_str(), c.priority))
            .collect();
        assert_eq!(
            names,
            [
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1)
            ]
        );
        let table = build_table(&columns, &[event], IncludeObject::None, json!({}), now());
        assert_eq!(
            cells(&table, 0),
            [
                json!("3h"),
                json!("Normal"),
                json!("Accepted"),
                json!("server/srv"),
                json!("spec"),
                json!("siderite, node-a"),
                json!("accepted by policy"),
                json!("3h"),
                json!(1),
                json!("srv.1"),
            ]
        );
    }

    #[test]
    fn event_series_overrides_last_seen_and_count() {
        let event = json!({"metadata": {"name": "e"},
                           "eventTime": "2025-06-01T11:00:00.000000Z",
                           "series": {"count": 4, "lastObservedTime": "2025-06-01T11:59:00.000000Z"}});
        let columns = builtin_columns("Event").unwrap();
        let table = build_table(&columns, &[event], IncludeObject::None, json!({}), now());
        let row = cells(&table, 0);
        assert_eq!(row[0], json!("60s"));
        assert_eq!(row[7], json!("60m"));
        assert_eq!(row[8], json!(4));
    }

    #[test]
    fn human_duration_matches_apimachinery() {
        let cases: &[(i64, i64, &str)] = &[
            // (seconds, extra milliseconds, expected)
            (-2, 0, "<invalid>"),
            (-1, -999, "0s"),
            (0, 0, "0s"),
            (0, 999, "0s"),
            (1, 0, "1s"),
            (70, 0, "70s"),
            (119, 999, "119s"),
            (120, 0, "2m"),
            (121, 0, "2m1s"),
            (190, 0, "3m10s"),
            (599, 999, "9m59s"),
            (600, 0, "10m"),
            (601, 0, "10m"),
            (70 * 60, 0, "70m"),
            (3 * 3600 - 1, 999, "179m"),
            (3 * 3600, 0, "3h"),
            (3 * 3600 + 60, 0, "3h1m"),
            (8 * 3600 - 1, 999, "7h59m"),
            (8 * 3600 + 59 * 60, 0, "8h"),
            (47 * 3600, 0, "47h"),
            (48 * 3600, 0, "2d"),
            (49 * 3600, 0, "2d1h"),
            (8 * 86400 - 1, 999, "7d23h"),
            ((8 * 24 + 2) * 3600, 0, "8d"),
            (367 * 86400, 0, "367d"),
            (2 * 365 * 86400 - 1, 999, "729d"),
            (2 * 365 * 86400, 0, "2y"),
            ((365 * 2 * 24 + 25) * 3600, 0, "2y1d"),
            (8 * 365 * 86400 - 1, 999, "7y364d"),
            ((365 * 8 * 24 + 2) * 3600, 0, "8y"),
            (9 * 365 * 86400, 0, "9y"),
        ];
        for &(seconds, millis, expected) in cases {
            let d = SignedDuration::from_secs(seconds) + SignedDuration::from_millis(millis);
            assert_eq!(human_duration(d), expected, "{seconds}s {millis}ms");
        }
    }
}
