//! ServerClass matching, pure: which Servers a ServerClass selects. [`ClassMatcher::compile`]
//! validates a class once (its regular expressions, expressions and selector) and
//! [`ClassMatcher::matches`] then judges servers without allocating much.
//!
//! Semantics (DESIGN.md, "Compatibility contract", and docs/api.md):
//! - Entries of one qualifier list are alternatives (OR); the fields inside one entry must all
//!   match (AND); the lists, the `selector` and the `expressions` must all hold (AND). An empty
//!   list does not constrain.
//! - `hardware` entries are partial [`HardwareInformation`]s: every field set in the entry must
//!   match the server's; an entry's list (e.g. `compute.processors`) matches when each of its
//!   elements matches some element of the server's list.
//! - `cpu` entries match any one processor (`version` is SMBIOS's processor version, which
//!   v1alpha2 calls `productName`); `systemInformation` entries match `hardware.system`.
//! - A string matches when it equals the server's value or, failing that, when it is a regular
//!   expression found in the value (`^…$` demands the whole value). Numbers and booleans match
//!   by equality.
//! - `expressions` work on the flattened inventory of [`flatten`]; see [`QualifierExpression`].
//!
//! Anything invalid (a regular expression that does not compile, an unknown key, an operator
//! with the wrong operands, a broken selector) fails [`ClassMatcher::compile`] with a message
//! for the ServerClass's condition; such a class matches nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

use crate::api::{
    ExpressionOperator, HardwareInformation, QualifierExpression, Server, ServerClassSpec,
};
use crate::apiserver::selector::{LabelSelector, label_selector_from_json};

/// Why a ServerClass cannot match anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassError {
    /// A qualifier string is not a valid regular expression (and is not needed literally:
    /// every string is compiled, so the class means the same on every server).
    #[error("qualifiers.{field}: {pattern:?} is not a valid regular expression: {reason}")]
    BadRegex {
        /// Where, e.g. `cpu[0].version`.
        field: String,
        /// The string.
        pattern: String,
        /// The regex crate's message.
        reason: String,
    },
    /// An expression is malformed.
    #[error("qualifiers.expressions[{index}] ({key} {operator:?}): {reason}")]
    BadExpression {
        /// Its position.
        index: usize,
        /// Its key.
        key: String,
        /// Its operator.
        operator: ExpressionOperator,
        /// What is wrong.
        reason: String,
    },
    /// `selector` is not a valid label selector.
    #[error("selector: {0}")]
    BadSelector(String),
}

/// A compiled ServerClass.
#[derive(Debug, Clone)]
pub struct ClassMatcher {
    hardware: Vec<Pattern>,
    cpu: Vec<Pattern>,
    system: Vec<Pattern>,
    label_sets: Vec<BTreeMap<String, String>>,
    selector: LabelSelector,
    expressions: Vec<Expression>,
}

impl ClassMatcher {
    /// Validates and compiles `spec`.
    pub fn compile(spec: &ServerClassSpec) -> Result<ClassMatcher, ClassError> {
        let q = &spec.qualifiers;
        let hardware = q
            .hardware
            .iter()
            .enumerate()
            .map(|(i, entry)| Pattern::compile(&to_value(entry), &format!("hardware[{i}]")))
            .collect::<Result<_, _>>()?;
        let cpu = q
            .cpu
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                // v1alpha1 `version` is the processor's SMBIOS version: v1alpha2 `productName`.
                let mut fields = serde_json::Map::new();
                if let Some(m) = &entry.manufacturer {
                    fields.insert("manufacturer".into(), Value::String(m.clone()));
                }
                if let Some(v) = &entry.version {
                    fields.insert("productName".into(), Value::String(v.clone()));
                }
                Pattern::compile(&Value::Object(fields), &format!("cpu[{i}]"))
            })
            .collect::<Result<_, _>>()?;
        let system = q
            .system_information
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                Pattern::compile(&to_value(entry), &format!("systemInformation[{i}]"))
            })
            .collect::<Result<_, _>>()?;
        let selector = label_selector_from_json(&to_value(&spec.selector))
            .map_err(|e| ClassError::BadSelector(e.to_string()))?;
        let expressions = q
            .expressions
            .iter()
            .enumerate()
            .map(|(i, e)| Expression::compile(i, e))
            .collect::<Result<_, _>>()?;
        Ok(ClassMatcher {
            hardware,
            cpu,
            system,
            label_sets: q.label_selectors.clone(),
            selector,
            expressions,
        })
    }

    /// Whether `server` qualifies (its inventory and labels only; whether it is free is the
    /// allocator's business).
    pub fn matches(&self, server: &Server) -> bool {
        self.matches_prepared(&Prepared::new(server))
    }

    /// [`Self::matches`] on a server prepared once for matching against many classes.
    pub fn matches_prepared(&self, server: &Prepared) -> bool {
        let labels = &server.labels;
        if !self.selector.matches(labels) {
            return false;
        }
        if !self.label_sets.is_empty()
            && !self
                .label_sets
                .iter()
                .any(|set| set.iter().all(|(k, v)| labels.get(k) == Some(v)))
        {
            return false;
        }
        let inventory = &server.inventory;
        let any = |patterns: &[Pattern], value: &Value| {
            patterns.is_empty() || patterns.iter().any(|p| p.matches(value))
        };
        if !any(&self.hardware, inventory) {
            return false;
        }
        let processors = &inventory["compute"]["processors"];
        if !self.cpu.is_empty()
            && !processors
                .as_array()
                .is_some_and(|list| list.iter().any(|p| self.cpu.iter().any(|c| c.matches(p))))
        {
            return false;
        }
        if !any(&self.system, &inventory["system"]) {
            return false;
        }
        if self.expressions.is_empty() {
            return true;
        }
        let flat = server.flat.get_or_init(|| flatten_value(inventory));
        self.expressions.iter().all(|e| e.holds(flat))
    }
}

/// What matching reads of a server (its labels and its inventory serialized to JSON, flattened
/// on first use by an expression), prepared once: matching 10,000 servers against 100 classes
/// must not serialize each inventory 100 times.
#[derive(Debug)]
pub struct Prepared {
    labels: BTreeMap<String, String>,
    inventory: Value,
    flat: OnceLock<Flattened>,
}

impl Prepared {
    /// Prepares `server` for matching.
    pub fn new(server: &Server) -> Prepared {
        Prepared {
            labels: server.metadata.labels.clone().unwrap_or_default(),
            inventory: match &server.spec.hardware {
                Some(hardware) => to_value(hardware),
                None => Value::Object(Default::default()),
            },
            flat: OnceLock::new(),
        }
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A qualifier string: equal, or else a regular expression found in the value.
#[derive(Debug, Clone)]
struct Text {
    literal: String,
    regex: Regex,
}

impl Text {
    fn compile(literal: &str, field: &str) -> Result<Text, ClassError> {
        let regex = Regex::new(literal).map_err(|e| ClassError::BadRegex {
            field: field.to_owned(),
            pattern: literal.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Text {
            literal: literal.to_owned(),
            regex,
        })
    }

    fn matches(&self, value: &str) -> bool {
        value == self.literal || self.regex.is_match(value)
    }
}

/// A compiled partial structure.
#[derive(Debug, Clone)]
enum Pattern {
    Object(Vec<(String, Pattern)>),
    List(Vec<Pattern>),
    Text(Text),
    Exact(Value),
}

impl Pattern {
    fn compile(value: &Value, field: &str) -> Result<Pattern, ClassError> {
        Ok(match value {
            Value::Object(fields) => Pattern::Object(
                fields
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| Ok((k.clone(), Pattern::compile(v, &format!("{field}.{k}"))?)))
                    .collect::<Result<_, ClassError>>()?,
            ),
            Value::Array(items) => Pattern::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Pattern::compile(v, &format!("{field}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::String(text) => Pattern::Text(Text::compile(text, field)?),
            other => Pattern::Exact(other.clone()),
        })
    }

    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Pattern::Object(fields), Value::Object(actual)) => fields
                .iter()
                .all(|(k, p)| actual.get(k).is_some_and(|v| p.matches(v))),
            (Pattern::List(items), Value::Array(actual)) => {
                items.iter().all(|p| actual.iter().any(|v| p.matches(v)))
            }
            (Pattern::Text(text), Value::String(actual)) => text.matches(actual),
            // A qualifier may quote a number (`speed: "2400"`); compare it as text.
            (Pattern::Text(text), Value::Number(n)) => text.matches(&n.to_string()),
            (Pattern::Exact(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Pattern::Exact(expected), actual) => expected == actual,
            _ => false,
        }
    }
}

/// A compiled [`QualifierExpression`].
#[derive(Debug, Clone)]
struct Expression {
    key: String,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
    Compare(ExpressionOperator, f64),
    Matches(Vec<Regex>),
}

impl Expression {
    fn compile(index: usize, e: &QualifierExpression) -> Result<Expression, ClassError> {
        let bad = |reason: String| ClassError::BadExpression {
            index,
            key: e.key.clone(),
            operator: e.operator,
            reason,
        };
        if !known_keys().contains(e.key.as_str()) {
            return Err(bad(
                "unknown key; keys are the flattened inventory fields listed in docs/api.md, \
                 e.g. compute.totalCoreCount, memory.totalSizeGiB, storage.devices[].type"
                    .to_owned(),
            ));
        }
        use ExpressionOperator as Op;
        let test = match e.operator {
            Op::In | Op::NotIn | Op::Matches if e.values.is_empty() => {
                return Err(bad("needs at least one value".into()));
            }
            Op::In => Test::In(e.values.iter().cloned().collect()),
            Op::NotIn => Test::NotIn(e.values.iter().cloned().collect()),
            Op::Exists | Op::DoesNotExist if !e.values.is_empty() => {
                return Err(bad("takes no values".into()));
            }
            Op::Exists => Test::Exists,
            Op::DoesNotExist => Test::DoesNotExist,
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => match e.values.as_slice() {
                [one] => {
                    let number = one
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|n| n.is_finite())
                        .ok_or_else(|| bad(format!("{one:?} is not a number")))?;
                    Test::Compare(e.operator, number)
                }
                _ => return Err(bad("needs exactly one number".into())),
            },
            Op::Matches => Test::Matches(
                e.values
                    .iter()
                    .map(|v| {
                        Regex::new(v).map_err(|err| {
                            bad(format!("{v:?} is not a valid regular expression: {err}"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Expression {
            key: e.key.clone(),
            test,
        })
    }

    fn holds(&self, flat: &Flattened) -> bool {
        let values = flat.get(&self.key).map(Vec::as_slice).unwrap_or_default();
        match &self.test {
            Test::In(set) => values.iter().any(|v| set.contains(v)),
            Test::NotIn(set) => !values.iter().any(|v| set.contains(v)),
            Test::Exists => !values.is_empty(),
            Test::DoesNotExist => values.is_empty(),
            Test::Compare(op, bound) => values.iter().any(|v| {
                v.parse::<f64>().is_ok_and(|n| match op {
                    ExpressionOperator::Gt => n > *bound,
                    ExpressionOperator::Gte => n >= *bound,
                    ExpressionOperator::Lt => n < *bound,
                    _ => n <= *bound,
                })
            }),
            Test::Matches(regexes) => values.iter().any(|v| regexes.iter().any(|r| r.is_match(v))),
        }
    }
}

/// The flattened inventory: key → values (one for a scalar, one per element under `[]`).
pub type Flattened = BTreeMap<String, Vec<String>>;

/// Byte sizes also offered in GiB (`…SizeGiB`), as a decimal number, for expressions.
const GIB_KEYS: [(&str, &str); 3] = [
    ("memory.totalSizeBytes", "memory.totalSizeGiB"),
    ("storage.totalSizeBytes", "storage.totalSizeGiB"),
    ("storage.devices[].size", "storage.devices[].sizeGiB"),
];

/// Flattens an inventory for [`QualifierExpression`]s: every field of `spec.hardware` under its
/// JSON path, with `[]` for list elements (`storage.devices[].type`), numbers and booleans as
/// text, plus `memory.totalSizeGiB`, `storage.totalSizeGiB` and `storage.devices[].sizeGiB`.
pub fn flatten(hardware: &HardwareInformation) -> Flattened {
    flatten_value(&to_value(hardware))
}

/// [`flatten`] of an inventory already serialized to JSON.
fn flatten_value(inventory: &Value) -> Flattened {
    let mut flat = Flattened::new();
    walk(inventory, String::new(), &mut flat);
    for (bytes_key, gib_key) in GIB_KEYS {
        if let Some(values) = flat.get(bytes_key) {
            let gib: Vec<String> = values
                .iter()
                .filter_map(|v| v.parse::<f64>().ok())
                .map(|b| format_number(b / f64::from(1u32 << 30)))
                .collect();
            flat.insert(gib_key.to_owned(), gib);
        }
    }
    flat
}

fn walk(value: &Value, path: String, flat: &mut Flattened) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Object(fields) => {
            for (k, v) in fields {
                walk(v, join(k), flat);
            }
        }
        Value::Array(items) => {
            let path = format!("{path}[]");
            for item in items {
                walk(item, path.clone(), flat);
            }
        }
        Value::Null => {}
        Value::String(s) => flat.entry(path).or_default().push(s.clone()),
        other => flat.entry(path).or_default().push(other.to_string()),
    }
}

/// A number as text without a needless fraction: `256`, `15.5`, `0.25`.
fn format_number(n: f64) -> String {
    let rounded = (n * 1000.0).round() / 1000.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        rounded.to_string()
    }
}

/// Every key [`flatten`] can produce, read from the JSON schema of [`HardwareInformation`].
pub fn known_keys() -> &'static BTreeSet<String> {
    static KEYS: OnceLock<BTreeSet<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let schema = schemars::schema_for!(HardwareInformation);
        let root = schema.as_value();
        let mut keys = BTreeSet::new();
        schema_keys(root, root, String::new(), &mut keys, 0);
        for (_, gib_key) in GIB_KEYS {
            keys.insert(gib_key.to_owned());
        }
        keys
    })
}

fn schema_keys(root: &Value, node: &Value, path: String, keys: &mut BTreeSet<String>, depth: u8) {
    if depth > 8 {
        return;
    }
    // Follow `$ref: #/$defs/Name`, and look through `anyOf` (how Option<Struct> is written).
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix("#/")
            .map(|p| p.split('/').fold(root, |v, part| &v[part]));
        if let Some(target) = target {
            schema_keys(root, target, path, keys, depth + 1);
        }
        return;
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(options) = node.get(combinator).and_then(Value::as_array) {
            for option in options {
                schema_keys(root, option, path.clone(), keys, depth + 1);
            }
        }
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            schema_keys(root, property, child, keys, depth + 1);
        }
        return;
    }
    if let Some(items) = node.get("items") {
        schema_keys(root, items, format!("{path}[]"), keys, depth + 1);
        return;
    }
    let is_null_only = node.get("type").and_then(Value::as_str) == Some("null");
    if !path.is_empty() && !is_null_only && node.get("anyOf").is_none() {
        keys.insert(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServerClass;

    /// The seed ServerClass (DESIGN.md), in the v1alpha1 list form published cluster YAML uses.
    const WORKER_LARGE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed/worker-large.yaml"
    ));

    fn class(yaml: &str) -> ServerClassSpec {
        serde_saphyr::from_str::<ServerClass>(yaml)
            .expect("valid ServerClass YAML")
            .spec
    }

    fn spec(qualifiers_yaml: &str) -> ServerClassSpec {
        class(&format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata: {{name: t}}\nspec:\n{qualifiers_yaml}"
        ))
    }

    /// A server from YAML of its `spec.hardware` and its labels.
    fn server(labels: &[(&str, &str)], hardware_yaml: &str) -> Server {
        let hardware: HardwareInformation =
            serde_saphyr::from_str(hardware_yaml).expect("valid hardware YAML");
        let mut server = Server::new(
            "s",
            crate::api::ServerSpec {
                hardware: Some(hardware),
                ..Default::default()
            },
        );
        server.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        server
    }

    const DELL_EPYC: &str = r#"
system: {manufacturer: "Dell Inc.", productName: "PowerEdge R6525"}
compute:
  totalCoreCount: 64
  totalThreadCount: 128
  processorCount: 2
  architecture: x86_64
  processors:
  - {manufacturer: "Advanced Micro Devices, Inc.", productName: "AMD EPYC 7543 32-Core Processor", speed: 2800, coreCount: 32}
  - {manufacturer: "AMD", productName: "AMD EPYC 7543 32-Core Processor", speed: 2800, coreCount: 32}
memory: {totalSizeBytes: 274877906944}
storage:
  devices:
  - {name: nvme0n1, type: NVME, size: 3840755982336, serial: S6EXNA0T}
  - {name: sda, type: HDD, size: 8001563222016, rotational: true}
network:
  interfaces:
  - {name: eno1, mac: "b0:7b:25:00:00:01", speedMbps: 25000}
"#;

    const SMC_XEON: &str = r#"
system: {manufacturer: Supermicro, productName: SYS-120U-TNR}
compute:
  totalCoreCount: 32
  processorCount: 1
  processors:
  - {manufacturer: "Intel(R) Corporation", productName: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"}
memory: {totalSizeBytes: 137438953472}
storage:
  devices:
  - {name: sda, type: SSD, size: 960197124096}
"#;

    fn matches(class: &ServerClassSpec, server: &Server) -> bool {
        ClassMatcher::compile(class)
            .expect("the class compiles")
            .matches(server)
    }

    #[test]
    fn seed_class_selects_dell_epyc_in_rack_a_only() {
        let seed = class(WORKER_LARGE);
        let cases = [
            (
                "Dell EPYC in rack-a",
                server(&[("rack", "rack-a")], DELL_EPYC),
                true,
            ),
            (
                "Dell EPYC in rack-b",
                server(&[("rack", "rack-b")], DELL_EPYC),
                false,
            ),
            ("Dell EPYC without labels", server(&[], DELL_EPYC), false),
            (
                "Supermicro Xeon in rack-a",
                server(&[("rack", "rack-a")], SMC_XEON),
                false,
            ),
            (
                "AMD EPYC, but not a Dell",
                server(
                    &[("rack", "rack-a")],
                    &DELL_EPYC.replace("\"Dell Inc.\"", "Lenovo"),
                ),
                false,
            ),
            (
                "Dell, but an AMD Opteron",
                server(
                    &[("rack", "rack-a")],
                    &DELL_EPYC.replace("EPYC 7543", "Opteron 6376"),
                ),
                false,
            ),
            (
                "no inventory at all",
                server(&[("rack", "rack-a")], "{}"),
                false,
            ),
        ];
        for (name, server, expected) in cases {
            assert_eq!(matches(&seed, &server), expected, "{name}");
        }
    }

    #[test]
    fn literal_product_names_with_regex_metacharacters_match_themselves() {
        let literal = spec(
            "  qualifiers:\n    cpu: [{version: \"Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\"}]\n",
        );
        assert!(matches(&literal, &server(&[], SMC_XEON)));
        // As a regex, the parentheses are groups: "Intel(R)" finds "IntelR" but not "Intel(R)".
        let prefix = spec("  qualifiers:\n    cpu: [{version: \"Intel(R) Xeon\"}]\n");
        assert!(!matches(&prefix, &server(&[], SMC_XEON)));
        let escaped = spec("  qualifiers:\n    cpu: [{version: \"Intel\\\\(R\\\\) Xeon\"}]\n");
        assert!(matches(&escaped, &server(&[], SMC_XEON)));
        let anchored = spec("  qualifiers:\n    cpu: [{version: \"^EPYC\"}]\n");
        assert!(
            !matches(&anchored, &server(&[], DELL_EPYC)),
            "^ anchors at the start"
        );
    }

    #[test]
    fn hardware_entries_are_partial_structures_and_alternatives() {
        let class = spec(
            r#"  qualifiers:
    hardware:
    - system: {manufacturer: Supermicro}
    - compute:
        processors: [{productName: "EPYC"}]
      storage:
        devices: [{type: NVME}, {rotational: true}]
"#,
        );
        assert!(matches(&class, &server(&[], DELL_EPYC)), "second entry");
        assert!(matches(&class, &server(&[], SMC_XEON)), "first entry");
        let no_hdd = DELL_EPYC.replace(", rotational: true", "");
        assert!(
            !matches(&class, &server(&[], &no_hdd)),
            "every listed device must exist"
        );
        let numbers = spec("  qualifiers:\n    hardware:\n    - compute: {totalCoreCount: 64}\n");
        assert!(matches(&numbers, &server(&[], DELL_EPYC)));
        assert!(!matches(&numbers, &server(&[], SMC_XEON)));
    }

    #[test]
    fn expressions_say_at_least_64_cores_and_256_gib() {
        let big = spec(
            r#"  qualifiers:
    expressions:
    - {key: compute.totalCoreCount, operator: Gte, values: ["64"]}
    - {key: memory.totalSizeGiB, operator: Gte, values: ["256"]}
"#,
        );
        assert!(matches(&big, &server(&[], DELL_EPYC)));
        assert!(!matches(&big, &server(&[], SMC_XEON)));
        let table = [
            ("storage.devices[].type", "In", "[NVME]", true, false),
            ("storage.devices[].type", "NotIn", "[HDD]", false, true),
            ("storage.devices[].sizeGiB", "Gt", "[\"5000\"]", true, false),
            ("storage.devices[].rotational", "Exists", "[]", true, false),
            (
                "storage.devices[].rotational",
                "DoesNotExist",
                "[]",
                false,
                true,
            ),
            (
                "system.manufacturer",
                "Matches",
                "[\"^Dell\", \"^HPE\"]",
                true,
                false,
            ),
            ("compute.totalCoreCount", "Lt", "[\"64\"]", false, true),
            ("compute.totalCoreCount", "Lte", "[\"64\"]", true, true),
            ("compute.totalCoreCount", "Gt", "[\"32\"]", true, false),
            (
                "network.interfaces[].speedMbps",
                "Gte",
                "[\"25000\"]",
                true,
                false,
            ),
        ];
        for (key, operator, values, dell, smc) in table {
            let class = spec(&format!(
                "  qualifiers:\n    expressions:\n    - {{key: \"{key}\", operator: {operator}, values: {values}}}\n"
            ));
            let what = format!("{key} {operator} {values}");
            assert_eq!(
                matches(&class, &server(&[], DELL_EPYC)),
                dell,
                "Dell: {what}"
            );
            assert_eq!(
                matches(&class, &server(&[], SMC_XEON)),
                smc,
                "Supermicro: {what}"
            );
        }
    }

    #[test]
    fn invalid_classes_are_refused_with_a_reason() {
        let cases = [
            (
                "    cpu: [{version: \"EPYC[\"}]\n",
                "qualifiers.cpu[0].productName",
            ),
            (
                "    expressions: [{key: compute.cores, operator: Gt, values: [\"1\"]}]\n",
                "unknown key",
            ),
            (
                "    expressions: [{key: compute.totalCoreCount, operator: Gt, values: [many]}]\n",
                "\"many\" is not a number",
            ),
            (
                "    expressions: [{key: compute.totalCoreCount, operator: Gt, values: [\"1\", \"2\"]}]\n",
                "exactly one number",
            ),
            (
                "    expressions: [{key: system.manufacturer, operator: Exists, values: [x]}]\n",
                "takes no values",
            ),
            (
                "    expressions: [{key: system.manufacturer, operator: In}]\n",
                "at least one value",
            ),
            (
                "    expressions: [{key: system.manufacturer, operator: Matches, values: [\"(\"]}]\n",
                "not a valid regular expression",
            ),
        ];
        for (qualifiers, expected) in cases {
            let error = ClassMatcher::compile(&spec(&format!("  qualifiers:\n{qualifiers}")))
                .expect_err(qualifiers)
                .to_string();
            assert!(error.contains(expected), "{qualifiers}: {error}");
        }
        let selector =
            spec("  selector:\n    matchExpressions: [{key: rack, operator: Near, values: [a]}]\n");
        assert!(ClassMatcher::compile(&selector).is_err());
    }

    #[test]
    fn empty_class_matches_every_server_and_selectors_use_expressions() {
        let any = spec("  qualifiers: {}\n");
        assert!(matches(&any, &server(&[], "{}")));
        let not_rack_c = spec(
            "  selector:\n    matchExpressions: [{key: rack, operator: NotIn, values: [rack-c]}]\n",
        );
        assert!(matches(&not_rack_c, &server(&[("rack", "rack-a")], "{}")));
        assert!(!matches(&not_rack_c, &server(&[("rack", "rack-c")], "{}")));
        let legacy = spec("  qualifiers:\n    labelSelectors: [{rack: rack-a}, {rack: rack-b}]\n");
        assert!(matches(&legacy, &server(&[("rack", "rack-b")], "{}")));
        assert!(!matches(&legacy, &server(&[("rack", "rack-c")], "{}")));
    }

    #[test]
    fn flattened_inventory_has_documented_keys_with_gib_sizes() {
        let hardware: HardwareInformation = serde_saphyr::from_str(DELL_EPYC).unwrap();
        let flat = flatten(&hardware);
        assert_eq!(flat["memory.totalSizeGiB"], ["256"]);
        assert_eq!(flat["compute.totalCoreCount"], ["64"]);
        assert_eq!(flat["storage.devices[].type"], ["NVME", "HDD"]);
        assert_eq!(flat["storage.devices[].sizeGiB"], ["3576.983", "7452.036"]);
        for key in flat.keys() {
            assert!(
                known_keys().contains(key),
                "{key} is flattened but not known"
            );
        }
        for key in [
            "system.manufacturer",
            "compute.processors[].productName",
            "compute.flags[]",
            "pci.devices[].className",
            "bios.vendor",
        ] {
            assert!(known_keys().contains(key), "{key} missing from known keys");
        }
    }
}
