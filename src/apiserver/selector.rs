//! Label and field selectors as k8s.io/apimachinery parses and matches them: the
//! `labelSelector` / `fieldSelector` query parameters and the `{matchLabels, matchExpressions}`
//! objects in resource specs, with apimachinery's syntax, validation rules and error wording.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Why a selector was rejected. Every variant is a client error (400 Bad Request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// One `key op values` term of a label selector string is malformed or invalid.
    #[error("unable to parse requirement: {reason}")]
    Requirement { reason: Box<SelectorError> },
    #[error("found '{found}', expected: {expected}")]
    Unexpected {
        found: String,
        expected: &'static str,
    },
    /// A key or value breaks the label syntax; `value` is already quoted or JSON-encoded.
    #[error("{field}: Invalid value: {value}: {detail}")]
    InvalidValue {
        field: String,
        value: String,
        detail: String,
    },
    #[error("[{}]", join_errors(errors))]
    Several { errors: Vec<SelectorError> },
    #[error(
        "{operator:?} is not a valid label selector operator: use In, NotIn, Exists or DoesNotExist"
    )]
    UnknownOperator { operator: String },
    #[error("invalid label selector: {detail}")]
    Malformed { detail: String },
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldTerm { selector: String, term: String },
    #[error("invalid field selector: invalid escape sequence: {sequence}")]
    InvalidEscape { sequence: String },
    #[error("invalid field selector: unescaped character in value: {character:?}")]
    UnescapedCharacter { character: char },
    #[error("field label not supported: {field}")]
    UnsupportedField { field: String },
}

fn join_errors(errors: &[SelectorError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The relation a label requirement checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    /// `=`
    Equals,
    /// `==`
    DoubleEquals,
    /// `!=`
    NotEquals,
    Exists,
    DoesNotExist,
    /// `>`: the label is an integer greater than the value.
    GreaterThan,
    /// `<`: the label is an integer less than the value.
    LessThan,
}

/// One validated `key op values` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Validates a requirement as apimachinery's `NewRequirement` does.
    pub fn new(
        key: &str,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Requirement, SelectorError> {
        let mut errors = Vec::new();
        if let Some(e) = invalid_label_key(key, "key") {
            errors.push(e);
        }
        let values_invalid = |detail: &str| SelectorError::InvalidValue {
            field: "values".to_owned(),
            value: Value::from(values.clone()).to_string(),
            detail: detail.to_owned(),
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                errors.push(values_invalid(
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errors.push(values_invalid(
                    "exact-match compatibility requires one single value",
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errors.push(values_invalid(
                    "values set must be empty for exists and does not exist",
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errors.push(values_invalid(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errors.push(SelectorError::InvalidValue {
                            field: format!("values[{i}]"),
                            value: format!("{v:?}"),
                            detail: "for 'Gt', 'Lt' operators, the value must be an integer"
                                .to_owned(),
                        });
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let problems = label_value_problems(v);
            if !problems.is_empty() {
                errors.push(SelectorError::InvalidValue {
                    field: format!("values[{i}][{key}]"),
                    value: format!("{v:?}"),
                    detail: problems.join("; "),
                });
            }
        }
        aggregate(errors)?;
        Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let label = labels.get(&self.key);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                label.is_some_and(|l| self.values.contains(l))
            }
            Operator::NotIn | Operator::NotEquals => label.is_none_or(|l| !self.values.contains(l)),
            Operator::Exists => label.is_some(),
            Operator::DoesNotExist => label.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(label), [bound]) = (label, self.values.as_slice()) else {
                    return false;
                };
                match (label.parse::<i64>(), bound.parse::<i64>()) {
                    (Ok(l), Ok(b)) if self.operator == Operator::GreaterThan => l > b,
                    (Ok(l), Ok(b)) => l < b,
                    _ => false,
                }
            }
        }
    }
}

/// apimachinery's aggregate error: nothing, the single error, or all distinct ones in brackets.
fn aggregate(errors: Vec<SelectorError>) -> Result<(), SelectorError> {
    let mut distinct: Vec<SelectorError> = Vec::new();
    for e in errors {
        if !distinct.iter().any(|d| d.to_string() == e.to_string()) {
            distinct.push(e);
        }
    }
    match distinct.len() {
        0 => Ok(()),
        1 => Err(distinct.remove(0)),
        _ => Err(SelectorError::Several { errors: distinct }),
    }
}

impl fmt::Display for Requirement {
    /// apimachinery's canonical form, e.g. `!a`, `b`, `c=d`, `e in (f,g)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (op, parenthesised) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", false),
            Operator::DoubleEquals => ("==", false),
            Operator::NotEquals => ("!=", false),
            Operator::In => (" in ", true),
            Operator::NotIn => (" notin ", true),
            Operator::GreaterThan => (">", false),
            Operator::LessThan => ("<", false),
        };
        let mut values = self.values.clone();
        values.sort();
        if parenthesised {
            write!(f, "{op}({})", values.join(","))
        } else {
            write!(f, "{op}{}", values.join(","))
        }
    }
}

/// A parsed label selector: the AND of its requirements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// A `null` selector object, which selects nothing (apimachinery's `labels.Nothing()`).
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches no object.
    pub fn nothing() -> LabelSelector {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector does not restrict anything (it matches every object).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    End,
    OpenPar,
    ClosePar,
    Comma,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    In,
    NotIn,
    Identifier,
}

#[derive(Debug, Clone)]
struct Item {
    token: Token,
    literal: String,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// apimachinery's label selector lexer, ending with a `Token::End` item.
fn lex(s: &str) -> Vec<Item> {
    let bytes = s.as_bytes();
    let mut items = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        let Some(&b) = bytes.get(pos) else {
            items.push(Item {
                token: Token::End,
                literal: String::new(),
            });
            return items;
        };
        let (token, len) = if is_special(b) {
            match (b, bytes.get(pos + 1)) {
                (b'!', Some(b'=')) => (Token::NotEquals, 2),
                (b'=', Some(b'=')) => (Token::DoubleEquals, 2),
                (b'!', _) => (Token::Not, 1),
                (b'=', _) => (Token::Equals, 1),
                (b'(', _) => (Token::OpenPar, 1),
                (b')', _) => (Token::ClosePar, 1),
                (b',', _) => (Token::Comma, 1),
                (b'>', _) => (Token::GreaterThan, 1),
                _ => (Token::LessThan, 1),
            }
        } else {
            let len = bytes[pos..]
                .iter()
                .position(|&b| is_special(b) || is_whitespace(b))
                .unwrap_or(bytes.len() - pos);
            let token = match &s[pos..pos + len] {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            };
            (token, len)
        };
        items.push(Item {
            token,
            literal: s[pos..pos + len].to_owned(),
        });
        pos += len;
    }
}

/// Whether `in`/`notin` are keywords (after a key) or plain identifiers (anywhere else).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<Item>,
    position: usize,
}

impl Parser {
    fn lookahead(&self, context: Context) -> (Token, &str) {
        // The lexer always ends with `End`, and parsing stops there.
        let item = &self.items[self.position.min(self.items.len() - 1)];
        let token = match (context, item.token) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            (_, token) => token,
        };
        (token, &item.literal)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let (token, literal) = self.lookahead(context);
        let literal = literal.to_owned();
        self.position += 1;
        (token, literal)
    }

    fn unexpected(found: impl Into<String>, expected: &'static str) -> SelectorError {
        SelectorError::Unexpected {
            found: found.into(),
            expected,
        }
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::Not => {
                    let requirement =
                        self.requirement()
                            .map_err(|reason| SelectorError::Requirement {
                                reason: Box::new(reason),
                            })?;
                    requirements.push(requirement);
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let (next, literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::Not {
                                return Err(Self::unexpected(literal, "identifier after ','"));
                            }
                        }
                        _ => return Err(Self::unexpected(literal, "',' or 'end of string'")),
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(Self::unexpected(
                        literal,
                        "!, identifier, or 'end of string'",
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, unary) = self.key_and_inferred_operator()?;
        if let Some(operator) = unary {
            return Requirement::new(&key, operator, Vec::new());
        }
        let operator = self.operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => self.exact_value()?,
        };
        // A set: sorted and without duplicates.
        let values: Vec<String> = values
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        Requirement::new(&key, operator, values)
    }

    /// `[!]key`, and `Exists`/`DoesNotExist` when no operator follows.
    fn key_and_inferred_operator(&mut self) -> Result<(String, Option<Operator>), SelectorError> {
        let (mut token, mut literal) = self.consume(Context::Values);
        let negated = token == Token::Not;
        if negated {
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(Self::unexpected(literal, "identifier"));
        }
        if let Some(e) = invalid_label_key(&literal, "<nil>") {
            return Err(e);
        }
        if negated {
            return Ok((literal, Some(Operator::DoesNotExist)));
        }
        let (next, _) = self.lookahead(Context::Values);
        let unary = matches!(next, Token::End | Token::Comma).then_some(Operator::Exists);
        Ok((literal, unary))
    }

    fn operator(&mut self) -> Result<Operator, SelectorError> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::NotEquals => Operator::NotEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            _ => return Err(Self::unexpected(literal, "in, notin, =, ==, !=, gt, lt")),
        })
    }

    /// `(a,b,…)`; empty entries such as in `(a,,b)` or `()` stand for the empty value.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(Self::unexpected(literal, "'('"));
        }
        let (token, literal) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let literal = literal.to_owned();
                let values = self.identifier_list()?;
                let (token, _) = self.consume(Context::Values);
                if token != Token::ClosePar {
                    return Err(Self::unexpected(literal, "')'"));
                }
                Ok(values)
            }
            Token::ClosePar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(Self::unexpected(literal, "',', ')' or identifier")),
        }
    }

    fn identifier_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut values = Vec::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.push(literal);
                    let (next, literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosePar => return Ok(values),
                        _ => return Err(Self::unexpected(literal, "',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosePar {
                        values.push(String::new());
                        return Ok(values);
                    }
                    if next == Token::Comma {
                        values.push(String::new());
                    }
                }
                _ => return Err(Self::unexpected(literal, "',', or identifier")),
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>` or `<`; empty when the term ends there.
    fn exact_value(&mut self) -> Result<Vec<String>, SelectorError> {
        let (token, _) = self.lookahead(Context::Values);
        if matches!(token, Token::End | Token::Comma) {
            return Ok(vec![String::new()]);
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            Ok(vec![literal])
        } else {
            Err(Self::unexpected(literal, "identifier"))
        }
    }
}

/// Parses a `labelSelector` query parameter such as `app=web,tier in (a,b),!legacy`. The empty
/// string selects everything.
pub fn parse_label_selector(s: &str) -> Result<LabelSelector, SelectorError> {
    let mut parser = Parser {
        items: lex(s),
        position: 0,
    };
    let mut requirements = parser.parse()?;
    requirements.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(LabelSelector {
        requirements,
        nothing: false,
    })
}

/// Converts a `metav1.LabelSelector` object (`{matchLabels, matchExpressions}`). `null` selects
/// nothing and `{}` selects everything, as in `LabelSelectorAsSelector`.
pub fn label_selector_from_json(v: &Value) -> Result<LabelSelector, SelectorError> {
    if v.is_null() {
        return Ok(LabelSelector::nothing());
    }
    let malformed = |detail: &str| SelectorError::Malformed {
        detail: detail.to_owned(),
    };
    let object = v
        .as_object()
        .ok_or_else(|| malformed("expected an object with matchLabels and/or matchExpressions"))?;
    let mut requirements = Vec::new();
    match object.get("matchLabels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (key, value) in labels {
                let value = value
                    .as_str()
                    .ok_or_else(|| malformed(&format!("matchLabels[{key}] must be a string")))?;
                requirements.push(Requirement::new(
                    key,
                    Operator::Equals,
                    vec![value.to_owned()],
                )?);
            }
        }
        Some(_) => return Err(malformed("matchLabels must be an object of strings")),
    }
    match object.get("matchExpressions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(expressions)) => {
            for (i, expression) in expressions.iter().enumerate() {
                let field = |name: &str| expression.get(name).filter(|v| !v.is_null());
                let key = match field("key") {
                    None => "",
                    Some(k) => k.as_str().ok_or_else(|| {
                        malformed(&format!("matchExpressions[{i}].key must be a string"))
                    })?,
                };
                let operator = match field("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    other => {
                        return Err(SelectorError::UnknownOperator {
                            operator: other.to_owned(),
                        });
                    }
                };
                let values = match field("values") {
                    None => Vec::new(),
                    Some(Value::Array(values)) => values
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            malformed(&format!("matchExpressions[{i}].values must be strings"))
                        })?,
                    Some(_) => {
                        return Err(malformed(&format!(
                            "matchExpressions[{i}].values must be a list"
                        )));
                    }
                };
                requirements.push(Requirement::new(key, operator, values)?);
            }
        }
        Some(_) => return Err(malformed("matchExpressions must be a list")),
    }
    requirements.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(LabelSelector {
        requirements,
        nothing: false,
    })
}

const LABEL_KEY_FORMAT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must \
start and end with an alphanumeric character";
const LABEL_VALUE_FORMAT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric \
characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS_SUBDOMAIN_FORMAT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS_SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const LABEL_MAX_LENGTH: usize = 63;
const DNS_SUBDOMAIN_MAX_LENGTH: usize = 253;

/// apimachinery's `RegexError` text: the rule, examples and the regular expression.
fn regex_error(rule: &str, format: &str, examples: &[&str]) -> String {
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}'")).collect();
    format!(
        "{rule} (e.g. {}, regex used for validation is '{format}')",
        examples.join(" or ")
    )
}

fn max_length_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, the shape of label names and non-empty values.
fn is_label_token(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let bytes = label.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                (first.is_ascii_lowercase() || first.is_ascii_digit())
                    && (last.is_ascii_lowercase() || last.is_ascii_digit())
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            }
            _ => false,
        }
    })
}

/// `IsQualifiedName`: `[prefix/]name`, the prefix a DNS subdomain, the name a label token.
fn label_key_problems(key: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                problems.push("prefix part must be non-empty".to_owned());
            } else {
                if prefix.len() > DNS_SUBDOMAIN_MAX_LENGTH {
                    problems.push(format!(
                        "prefix part {}",
                        max_length_error(DNS_SUBDOMAIN_MAX_LENGTH)
                    ));
                }
                if !is_dns_subdomain(prefix) {
                    problems.push(format!(
                        "prefix part {}",
                        regex_error(DNS_SUBDOMAIN_RULE, DNS_SUBDOMAIN_FORMAT, &["example.com"])
                    ));
                }
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. \
                 'example.com/MyName')",
                regex_error(
                    LABEL_KEY_RULE,
                    LABEL_KEY_FORMAT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        problems.push("name part must be non-empty".to_owned());
    } else if name.len() > LABEL_MAX_LENGTH {
        problems.push(format!("name part {}", max_length_error(LABEL_MAX_LENGTH)));
    }
    if !is_label_token(name) {
        problems.push(format!(
            "name part {}",
            regex_error(
                LABEL_KEY_RULE,
                LABEL_KEY_FORMAT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    problems
}

fn invalid_label_key(key: &str, field: &str) -> Option<SelectorError> {
    let problems = label_key_problems(key);
    (!problems.is_empty()).then(|| SelectorError::InvalidValue {
        field: field.to_owned(),
        value: format!("{key:?}"),
        detail: problems.join("; "),
    })
}

/// `IsValidLabelValue`: empty, or a label token of at most 63 characters.
fn label_value_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > LABEL_MAX_LENGTH {
        problems.push(max_length_error(LABEL_MAX_LENGTH));
    }
    if !value.is_empty() && !is_label_token(value) {
        problems.push(regex_error(
            LABEL_VALUE_RULE,
            LABEL_VALUE_FORMAT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    problems
}

/// The object fields a field selector may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectableField {
    /// `metadata.name`
    Name,
    /// `metadata.namespace` ("" for cluster-scoped objects)
    Namespace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: SelectableField,
    value: String,
    negated: bool,
}

/// A parsed `fieldSelector`: the AND of `field=value` / `field!=value` terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    pub fn matches(&self, name: &str, namespace: Option<&str>) -> bool {
        self.terms.iter().all(|t| {
            let actual = match t.field {
                SelectableField::Name => name,
                SelectableField::Namespace => namespace.unwrap_or_default(),
            };
            (actual == t.value) != t.negated
        })
    }

    /// The name an equality term requires, letting a list become a single lookup.
    pub fn single_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == SelectableField::Name && !t.negated)
            .map(|t| t.value.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// Parses a `fieldSelector` query parameter such as `metadata.name=web,metadata.namespace!=x`.
/// Values may escape `\`, `,` and `=` with a backslash. Only `metadata.name` and
/// `metadata.namespace` can be selected on, as for custom resources without selectable fields.
pub fn parse_field_selector(s: &str) -> Result<FieldSelector, SelectorError> {
    let mut parts = split_field_terms(s);
    // apimachinery sorts the terms before reading them, so errors name the first in that order.
    parts.sort_unstable();
    let mut parsed = Vec::new();
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        let (field, op, raw_value) =
            split_field_term(part).ok_or_else(|| SelectorError::FieldTerm {
                selector: s.to_owned(),
                term: part.to_owned(),
            })?;
        parsed.push((field, op == "!=", unescape_field_value(raw_value)?));
    }
    let terms = parsed
        .into_iter()
        .map(|(field, negated, value)| {
            let field = match field {
                "metadata.name" => SelectableField::Name,
                "metadata.namespace" => SelectableField::Namespace,
                other => {
                    return Err(SelectorError::UnsupportedField {
                        field: other.to_owned(),
                    });
                }
            };
            Ok(FieldTerm {
                field,
                value,
                negated,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FieldSelector { terms })
}

/// Splits on commas not escaped by a backslash (the escape stays in the term).
fn split_field_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
}

/// `lhs op rhs` at the first operator; the field name itself cannot be escaped.
fn split_field_term(term: &str) -> Option<(&str, &'static str, &str)> {
    term.char_indices().find_map(|(i, _)| {
        ["!=", "==", "="]
            .into_iter()
            .find(|op| term[i..].starts_with(op))
            .map(|op| (&term[..i], op, &term[i + op.len()..]))
    })
}

fn unescape_field_value(raw: &str) -> Result<String, SelectorError> {
    let mut value = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('\\' | ',' | '=')) => value.push(escaped),
                Some(other) => {
                    return Err(SelectorError::InvalidEscape {
                        sequence: format!("\\{other}"),
                    });
                }
                None => {
                    return Err(SelectorError::InvalidEscape {
                        sequence: "\\".to_owned(),
                    });
                }
            },
            ',' | '=' => return Err(SelectorError::UnescapedCharacter { character: c }),
            c => value.push(c),
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn matches(selector: &str, pairs: &[(&str, &str)]) -> bool {
        parse_label_selector(selector)
            .unwrap()
            .matches(&labels(pairs))
    }

    #[test]
    fn empty_selector_matches_everything() {
        let selector = parse_label_selector("").unwrap();
        assert!(selector.is_empty());
        assert!(selector.matches(&labels(&[])));
        assert!(parse_label_selector("  ").unwrap().is_empty());
    }

    #[test]
    fn equality_operators() {
        for selector in ["app=web", "app==web", " app = web "] {
            assert!(matches(selector, &[("app", "web")]), "{selector}");
            assert!(!matches(selector, &[("app", "db")]), "{selector}");
            assert!(!matches(selector, &[]), "{selector}");
        }
        assert!(matches("app!=web", &[("app", "db")]));
        assert!(matches("app!=web", &[]));
        assert!(!matches("app!=web", &[("app", "web")]));
        assert!(matches("app=", &[("app", "")]));
    }

    #[test]
    fn set_operators() {
        assert!(matches("tier in (a, b)", &[("tier", "b")]));
        assert!(!matches("tier in (a,b)", &[("tier", "c")]));
        assert!(!matches("tier in (a,b)", &[]));
        assert!(matches("tier notin (a,b)", &[("tier", "c")]));
        assert!(matches("tier notin (a,b)", &[]));
        assert!(!matches("tier notin (a,b)", &[("tier", "a")]));
        assert!(matches("tier in (a,,b)", &[("tier", "")]));
        assert!(matches("tier in ()", &[("tier", "")]));
    }

    #[test]
    fn existence_operators_and_conjunction() {
        assert!(matches("managed", &[("managed", "")]));
        assert!(!matches("managed", &[]));
        assert!(matches("!legacy", &[]));
        assert!(!matches("!legacy", &[("legacy", "1")]));
        let selector = "app=web,!legacy,tier in (a,b),example.com/owned";
        assert!(matches(
            selector,
            &[("app", "web"), ("tier", "a"), ("example.com/owned", "x")]
        ));
        assert!(!matches(selector, &[("app", "web"), ("tier", "a")]));
    }

    #[test]
    fn numeric_comparisons() {
        assert!(matches("gen>3", &[("gen", "4")]));
        assert!(!matches("gen>3", &[("gen", "3")]));
        assert!(matches("gen<3", &[("gen", "-1")]));
        assert!(!matches("gen<3", &[("gen", "x")]));
        assert!(parse_label_selector("gen>x").is_err());
    }

    #[test]
    fn keywords_are_values_after_operators() {
        assert!(matches("in=notin", &[("in", "notin")]));
        assert!(matches("x in (in,notin)", &[("x", "in")]));
    }

    #[test]
    fn canonical_string_sorts_keys_and_values() {
        let selector = parse_label_selector("z in (b,a), !y, a==1, m").unwrap();
        assert_eq!(selector.to_string(), "a==1,m,!y,z in (a,b)");
    }

    #[test]
    fn syntax_errors_use_apimachinery_wording() {
        let message = |s: &str| parse_label_selector(s).unwrap_err().to_string();
        assert_eq!(
            message("app=web,"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            message("app=web app=db"),
            "found 'app', expected: ',' or 'end of string'"
        );
        assert_eq!(
            message("=web"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            message("tier in a"),
            "unable to parse requirement: found 'a', expected: '('"
        );
        assert_eq!(
            message("tier in (a b)"),
            "unable to parse requirement: found 'b', expected: ',' or ')'"
        );
        assert_eq!(
            message("app web"),
            "unable to parse requirement: found 'web', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            message("!app=web"),
            "found '=', expected: ',' or 'end of string'"
        );
    }

    #[test]
    fn invalid_keys_and_values_are_rejected() {
        let err = parse_label_selector("app=-bad-").unwrap_err().to_string();
        assert!(
            err.starts_with("unable to parse requirement: values[0][app]: Invalid value: \"-bad-\": a valid label must be an empty string"),
            "{err}"
        );
        let err = parse_label_selector("Bad_Prefix/app=x")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unable to parse requirement: <nil>: Invalid value: \"Bad_Prefix/app\": prefix part a lowercase RFC 1123 subdomain"),
            "{err}"
        );
        let long = "v".repeat(64);
        let err = parse_label_selector(&format!("app={long}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be no more than 63 characters"), "{err}");
        assert!(parse_label_selector("a/b/c").is_err());
        assert!(parse_label_selector("app=a b").is_err());
        assert!(parse_label_selector("cluster.x-k8s.io/cluster-name=prod").is_ok());
    }

    #[test]
    fn label_selector_object_converts_every_operator() {
        let selector = label_selector_from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "zone", "operator": "NotIn", "values": ["x"]},
                {"key": "managed", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }))
        .unwrap();
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "a"), ("managed", "")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "c"), ("managed", "")])));
        assert!(!selector.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("managed", ""),
            ("zone", "x")
        ])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!selector.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("managed", ""),
            ("legacy", "1")
        ])));
    }

    #[test]
    fn label_selector_object_null_matches_nothing_and_empty_everything() {
        let nothing = label_selector_from_json(&Value::Null).unwrap();
        assert!(!nothing.matches(&labels(&[])));
        assert!(!nothing.is_empty());
        let everything = label_selector_from_json(&json!({})).unwrap();
        assert!(everything.matches(&labels(&[("a", "b")])));
        assert!(everything.is_empty());
    }

    #[test]
    fn label_selector_object_errors() {
        let err = label_selector_from_json(&json!({"matchExpressions": [
            {"key": "a", "operator": "Gt", "values": ["1"]}]}))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"Gt\" is not a valid label selector operator: use In, NotIn, Exists or DoesNotExist"
        );
        let err = label_selector_from_json(&json!({"matchExpressions": [
            {"key": "a", "operator": "In", "values": []}]}))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
        );
        let err = label_selector_from_json(&json!({"matchExpressions": [
            {"key": "a", "operator": "Exists", "values": ["x"]}]}))
        .unwrap_err();
        assert!(
            err.to_string().contains("values set must be empty"),
            "{err}"
        );
        let err =
            label_selector_from_json(&json!({"matchLabels": {"bad key": "x y"}})).unwrap_err();
        assert!(
            matches!(err, SelectorError::Several { ref errors } if errors.len() == 2),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("[key: Invalid value: \"bad key\""),
            "{err}"
        );
        assert!(label_selector_from_json(&json!({"matchLabels": {"a": 1}})).is_err());
    }

    #[test]
    fn field_selector_matches_name_and_namespace() {
        let selector =
            parse_field_selector("metadata.name=web,metadata.namespace!=kube-system").unwrap();
        assert!(selector.matches("web", Some("default")));
        assert!(!selector.matches("web", Some("kube-system")));
        assert!(!selector.matches("db", Some("default")));
        assert_eq!(selector.single_name(), Some("web"));

        let by_namespace = parse_field_selector("metadata.namespace==default").unwrap();
        assert!(by_namespace.matches("any", Some("default")));
        assert_eq!(by_namespace.single_name(), None);

        let cluster_scoped = parse_field_selector("metadata.namespace=").unwrap();
        assert!(cluster_scoped.matches("ns", None));
        assert!(parse_field_selector("").unwrap().is_empty());
        assert!(
            parse_field_selector("metadata.name!=web")
                .unwrap()
                .single_name()
                .is_none()
        );
    }

    #[test]
    fn field_selector_values_unescape() {
        let selector = parse_field_selector(r"metadata.name=a\,b\=c\\d").unwrap();
        assert_eq!(selector.single_name(), Some(r"a,b=c\d"));
    }

    #[test]
    fn field_selector_errors_use_apiserver_wording() {
        let message = |s: &str| parse_field_selector(s).unwrap_err().to_string();
        assert_eq!(
            message("spec.hostname=x"),
            "field label not supported: spec.hostname"
        );
        assert_eq!(
            message("metadata.name"),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            message(r"metadata.name=a\b"),
            r"invalid field selector: invalid escape sequence: \b"
        );
        assert_eq!(
            message("metadata.name=a=b"),
            "invalid field selector: unescaped character in value: '='"
        );
        assert_eq!(
            message("metadata.name=a\\"),
            "invalid field selector: invalid escape sequence: \\"
        );
    }
}
