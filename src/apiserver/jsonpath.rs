//! The Kubernetes dialect of JSONPath (client-go `util/jsonpath`) used by CRD
//! `additionalPrinterColumns` and `-o jsonpath`, parsed once and evaluated over `serde_json::Value`.
//!
//! Supported: `.a.b`, `.a\.b` (escaped dots in keys), `['a']`, `[0]`, `[-1]`, `[1:3]`, `[*]`, `.*`,
//! `..name`, unions `[0,2]` / `['a','b']`, and filters `[?(@.type=="Ready")]` with `==`, `!=`,
//! `<`, `>`, `<=`, `>=` against string, number and boolean literals or another `@` path, or bare
//! `[?(@.x)]` for existence. One expression, optionally wrapped in `{…}`; templates with text,
//! several `{…}` blocks or `range`/`end` are rejected.
//!
//! The quirks of client-go are kept on purpose, because CRD authors write paths against them:
//! `['a.b']` means `.a.b` (the key is re-parsed as a dotted path; write `['a\.b']` for a key
//! containing a dot), every backslash in a field name is dropped, and a missing key yields no
//! result rather than an error.

use std::fmt;

use serde_json::Value;

/// Why an expression could not be parsed; `at` is a byte offset into the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonPathError {
    #[error("empty JSONPath expression: write a path such as `.spec.hostname`")]
    Empty,
    #[error("missing closing '}}' for the '{{' at offset {at}")]
    UnclosedBrace { at: usize },
    #[error(
        "unexpected {found:?} at offset {at}: only a single path is supported (no text outside \
         '{{…}}', no second '{{…}}' block)"
    )]
    TrailingInput { found: char, at: usize },
    #[error("unexpected {found:?} at offset {at}: expected '.', '[', '..' or the end of the path")]
    UnexpectedChar { found: char, at: usize },
    #[error("line break at offset {at}: a path must be on one line")]
    LineBreak { at: usize },
    #[error("unterminated '[' at offset {at}: add the closing ']'")]
    UnterminatedBracket { at: usize },
    #[error(
        "invalid array index {text:?} at offset {at}: expected n, -n, start:end[:step], * or 'key'"
    )]
    InvalidIndex { text: String, at: usize },
    #[error("unterminated filter at offset {at}: a filter is written [?(@.field==\"value\")]")]
    UnterminatedFilter { at: usize },
    #[error("expected ']' after the filter's ')' at offset {at}")]
    FilterNotClosed { at: usize },
    #[error("unsupported filter operator {op:?} at offset {at}: use ==, !=, <, >, <= or >=")]
    FilterOperator { op: String, at: usize },
    #[error(
        "invalid filter operand {text:?} at offset {at}: expected a quoted string, number, true, false or an @ path"
    )]
    FilterOperand { text: String, at: usize },
    #[error("unterminated quoted string at offset {at}")]
    UnterminatedQuote { at: usize },
    #[error("invalid escape in quoted string {text:?} at offset {at}")]
    InvalidEscape { text: String, at: usize },
    #[error("{what} at offset {at} is not supported here: only a path is allowed")]
    Unsupported { what: String, at: usize },
}

/// A parsed expression. Evaluation never fails: like the CRD table convertor (which sets
/// `AllowMissingKeys` and turns every evaluation error into an empty cell), anything that would
/// be an error in client-go (indexing a non-array, an index out of range, comparing a string with
/// a number) yields no results.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    source: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Object member; the name has had its escaping backslashes removed.
    Field(String),
    /// `.*`: every member value of an object or element of an array.
    Wildcard,
    /// `..`: the value and every descendant object or array.
    Recursive,
    /// `[n]`, `[a:b:c]` and `[*]`.
    Slice(Slice),
    /// `[x,y]`: each alternative is evaluated against the same input and the results concatenated.
    Union(Vec<Vec<Step>>),
    Filter(Box<Filter>),
}

/// Array selection with client-go's parameter rules (`[n]` is `[n:n+1]`, negative indices count
/// from the end).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slice {
    start: Option<i64>,
    end: SliceEnd,
    step: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SliceEnd {
    /// `[a:]` or `[*]`: up to the length of the array.
    Open,
    At(i64),
    /// `[n]`: the end is `n + 1`, and an end of 0 (from `[-1]`) means the array's length.
    AfterStart(i64),
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    /// `[?(@.x)]`: elements for which the path finds anything, even `null`.
    Exists(Vec<Step>),
    Compare {
        left: Vec<Step>,
        op: CompareOp,
        right: Operand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompareOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(Vec<Step>),
    Literal(Literal),
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Parses one expression such as `.status.conditions[?(@.type=="Ready")].status`, with or
/// without surrounding braces.
pub fn parse(expr: &str) -> Result<JsonPath, JsonPathError> {
    let (start, end) = action_bounds(expr)?;
    let parser = Parser { src: expr };
    let steps = parser.steps(start, end, false)?;
    if steps.is_empty() {
        // `$`, `@` or nothing at all: client-go would return the whole object, but a printer
        // column that names nothing is a mistake worth reporting.
        return Err(JsonPathError::Empty);
    }
    Ok(JsonPath {
        source: expr.to_owned(),
        steps,
    })
}

/// The byte range holding the path: inside `{…}` when the expression is braced.
fn action_bounds(expr: &str) -> Result<(usize, usize), JsonPathError> {
    let leading = expr.len() - expr.trim_start().len();
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(JsonPathError::Empty);
    }
    if !trimmed.starts_with('{') {
        return Ok((leading, leading + trimmed.len()));
    }
    // The closing brace is the first '}' outside quotes; anything after it is a second template
    // block or text, which a single path cannot express.
    let body = leading + 1;
    let mut quote: Option<char> = None;
    let mut prev = '\0';
    for (i, c) in expr[body..].char_indices() {
        let at = body + i;
        match (quote, c) {
            (Some(q), c) if c == q && prev != '\\' => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '}') => {
                let rest = &expr[at + 1..];
                if let Some((j, found)) = rest.char_indices().find(|(_, c)| !c.is_whitespace()) {
                    return Err(JsonPathError::TrailingInput {
                        found,
                        at: at + 1 + j,
                    });
                }
                return Ok((body, at));
            }
            (None, _) => {}
        }
        prev = c;
    }
    Err(JsonPathError::UnclosedBrace { at: leading })
}

/// Characters that end a field name unless escaped with a backslash (client-go's terminators).
fn is_terminator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\r' | '\n' | '.' | ',' | '[' | ']' | '$' | '@' | '{' | '}'
    )
}

/// Recursive-descent parser over byte ranges of the original expression, so that every error
/// offset refers to the text the user wrote.
struct Parser<'a> {
    src: &'a str,
}

impl Parser<'_> {
    fn char_at(&self, at: usize) -> Option<char> {
        self.src[at..].chars().next()
    }

    /// Parses `src[start..end]` into steps. With `leading_field`, the range is read as if it
    /// followed a '.', which is how client-go re-parses `['key']`.
    fn steps(
        &self,
        start: usize,
        end: usize,
        leading_field: bool,
    ) -> Result<Vec<Step>, JsonPathError> {
        let mut steps = Vec::new();
        let mut pos = start;
        if leading_field {
            pos = self.field(pos, end, &mut steps);
        }
        while pos < end {
            let rest = &self.src[pos..end];
            let Some(c) = rest.chars().next() else { break };
            match c {
                ' ' | '\t' | '$' | '@' => pos += 1,
                '\r' | '\n' => return Err(JsonPathError::LineBreak { at: pos }),
                '[' if rest.starts_with("[?(") => pos = self.filter(pos, end, &mut steps)?,
                '[' => pos = self.bracket(pos, end, &mut steps)?,
                '.' if rest.starts_with("..") => {
                    steps.push(Step::Recursive);
                    pos += 2;
                    if self
                        .char_at(pos)
                        .is_some_and(|c| pos < end && (c == '_' || c.is_alphanumeric()))
                    {
                        pos = self.field(pos, end, &mut steps);
                    }
                }
                '.' => pos = self.field(pos + 1, end, &mut steps),
                '"' | '\'' => {
                    return Err(JsonPathError::Unsupported {
                        what: "quoted text".into(),
                        at: pos,
                    });
                }
                c if c == '_' || c.is_alphanumeric() || c == '+' || c == '-' => {
                    let len = rest.find(is_terminator).unwrap_or(rest.len());
                    return Err(JsonPathError::Unsupported {
                        what: format!("{:?}", &rest[..len]),
                        at: pos,
                    });
                }
                found => return Err(JsonPathError::UnexpectedChar { found, at: pos }),
            }
        }
        Ok(steps)
    }

    /// Reads a field name starting at `pos` up to the next unescaped terminator; returns the
    /// position after it.
    fn field(&self, pos: usize, end: usize, steps: &mut Vec<Step>) -> usize {
        let mut chars = self.src[pos..end].char_indices();
        let mut len = end - pos;
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                // The escaped character is part of the name, whatever it is.
                chars.next();
            } else if is_terminator(c) {
                len = i;
                break;
            }
        }
        let raw = &self.src[pos..pos + len];
        if raw == "*" {
            steps.push(Step::Wildcard);
        } else {
            // client-go removes every backslash, escaping or not.
            steps.push(Step::Field(raw.replace('\\', "")));
        }
        pos + len
    }

    /// `[...]`: slice, `*`, `'key'` or a comma-separated union of those.
    fn bracket(
        &self,
        open: usize,
        end: usize,
        steps: &mut Vec<Step>,
    ) -> Result<usize, JsonPathError> {
        let body = open + 1;
        let close = match self.src[body..end].find([']', '\n']) {
            Some(i) if self.src.as_bytes()[body + i] == b']' => body + i,
            _ => return Err(JsonPathError::UnterminatedBracket { at: open }),
        };
        let text = &self.src[body..close];
        if text.contains(',') {
            let mut alternatives = Vec::new();
            let mut part_start = body;
            for part in text.split(',') {
                let leading = part.len() - part.trim_start().len();
                let part_at = part_start + leading;
                alternatives.push(self.bracket_body(part.trim(), part_at)?);
                part_start += part.len() + 1;
            }
            steps.push(Step::Union(alternatives));
        } else {
            steps.extend(self.bracket_body(text, body)?);
        }
        Ok(close + 1)
    }

    /// One bracket selector without the brackets; `at` is where `text` starts.
    fn bracket_body(&self, text: &str, at: usize) -> Result<Vec<Step>, JsonPathError> {
        if text == "*" {
            return Ok(vec![Step::Slice(Slice {
                start: None,
                end: SliceEnd::Open,
                step: None,
            })]);
        }
        if text.len() >= 2
            && text.starts_with('\'')
            && text.ends_with('\'')
            && !text[1..text.len() - 1].contains('\'')
        {
            // client-go parses `['k']` as `.k`, so dots split and backslashes escape.
            return self.steps(at + 1, at + text.len() - 1, true);
        }
        parse_slice(text)
            .map(|slice| vec![Step::Slice(slice)])
            .ok_or_else(|| JsonPathError::InvalidIndex {
                text: text.to_owned(),
                at,
            })
    }

    /// `[?(left op right)]` or `[?(path)]`.
    fn filter(
        &self,
        open: usize,
        end: usize,
        steps: &mut Vec<Step>,
    ) -> Result<usize, JsonPathError> {
        let body = open + "[?(".len();
        let mut quote: Option<char> = None;
        let mut prev = '\0';
        let mut close = None;
        for (i, c) in self.src[body..end].char_indices() {
            match (quote, c) {
                (_, '\n') => break,
                (Some(q), c) if c == q && prev != '\\' => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, ')') => {
                    close = Some(body + i);
                    break;
                }
                (None, _) => {}
            }
            prev = c;
        }
        let Some(close) = close else {
            return Err(JsonPathError::UnterminatedFilter { at: open });
        };
        if self.char_at(close + 1).filter(|_| close + 1 < end) != Some(']') {
            return Err(JsonPathError::FilterNotClosed { at: close + 1 });
        }
        let text = &self.src[body..close];
        // Same split as client-go's `^([^!<>=]+)([!<>=]+)(.+?)$`: the operator is the first run
        // of comparison characters.
        let is_op = |c: char| matches!(c, '!' | '<' | '>' | '=');
        let filter = match text.find(is_op) {
            Some(op_start) if op_start > 0 => {
                let op_len = text[op_start..]
                    .find(|c| !is_op(c))
                    .unwrap_or(text.len() - op_start);
                let op_text = &text[op_start..op_start + op_len];
                let op = match op_text {
                    "==" => CompareOp::Eq,
                    "!=" => CompareOp::Ne,
                    "<" => CompareOp::Lt,
                    ">" => CompareOp::Gt,
                    "<=" => CompareOp::Le,
                    ">=" => CompareOp::Ge,
                    _ => {
                        return Err(JsonPathError::FilterOperator {
                            op: op_text.to_owned(),
                            at: body + op_start,
                        });
                    }
                };
                let right_at = body + op_start + op_len;
                Filter::Compare {
                    left: self.steps(body, body + op_start, false)?,
                    op,
                    right: self.operand(right_at, close)?,
                }
            }
            _ => Filter::Exists(self.steps(body, close, false)?),
        };
        steps.push(Step::Filter(Box::new(filter)));
        Ok(close + 2)
    }

    /// The right-hand side of a comparison: a literal or a path relative to the element.
    fn operand(&self, start: usize, end: usize) -> Result<Operand, JsonPathError> {
        let raw = &self.src[start..end];
        let text = raw.trim();
        let at = start + (raw.len() - raw.trim_start().len());
        let invalid = || JsonPathError::FilterOperand {
            text: text.to_owned(),
            at,
        };
        let Some(first) = text.chars().next() else {
            return Err(invalid());
        };
        match first {
            '"' | '\'' => unquote(text, at).map(|s| Operand::Literal(Literal::Str(s))),
            '+' | '-' | '0'..='9' => {
                if !text[1..].chars().all(|c| c == '.' || c.is_ascii_digit()) {
                    return Err(invalid());
                }
                if let Ok(i) = text.parse::<i64>() {
                    Ok(Operand::Literal(Literal::Int(i)))
                } else {
                    text.parse::<f64>()
                        .map(|f| Operand::Literal(Literal::Float(f)))
                        .map_err(|_| invalid())
                }
            }
            _ if text == "true" => Ok(Operand::Literal(Literal::Bool(true))),
            _ if text == "false" => Ok(Operand::Literal(Literal::Bool(false))),
            '@' | '$' | '.' | '[' => Ok(Operand::Path(self.steps(at, at + text.len(), false)?)),
            _ => Err(invalid()),
        }
    }
}

/// Go-style unquoting of a `"…"` or `'…'` literal (client-go's `UnquoteExtend`).
fn unquote(text: &str, at: usize) -> Result<String, JsonPathError> {
    let mut chars = text.chars();
    let quote = chars
        .next()
        .ok_or(JsonPathError::UnterminatedQuote { at })?;
    let invalid = || JsonPathError::InvalidEscape {
        text: text.to_owned(),
        at,
    };
    let mut out = String::new();
    loop {
        let c = chars
            .next()
            .ok_or(JsonPathError::UnterminatedQuote { at })?;
        match c {
            c if c == quote => break,
            '\\' => {
                let escaped = chars.next().ok_or_else(invalid)?;
                out.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'v' => '\u{b}',
                    '\\' | '\'' | '"' => escaped,
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 4)
                            .and_then(char::from_u32)
                            .ok_or_else(invalid)?
                    }
                    _ => return Err(invalid()),
                });
            }
            c => out.push(c),
        }
    }
    if chars.next().is_some() {
        return Err(JsonPathError::FilterOperand {
            text: text.to_owned(),
            at,
        });
    }
    Ok(out)
}

/// `start[:end[:step]]` where each part is `-?[0-9]*`; `None` when the text is not of that form.
fn parse_slice(text: &str) -> Option<Slice> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() > 3
        || !parts.iter().all(|p| {
            let digits = p.strip_prefix('-').unwrap_or(p);
            digits.chars().all(|c| c.is_ascii_digit())
        })
    {
        return None;
    }
    let number = |p: &str| -> Option<Option<i64>> {
        if p.is_empty() {
            Some(None)
        } else {
            p.parse().ok().map(Some)
        }
    };
    let start = number(parts[0])?;
    let end = match parts.get(1) {
        None => SliceEnd::AfterStart(start.unwrap_or(0).checked_add(1)?),
        Some(p) => number(p)?.map_or(SliceEnd::Open, SliceEnd::At),
    };
    let step = match parts.get(2) {
        None => None,
        Some(p) => number(p)?,
    };
    Some(Slice { start, end, step })
}

/// Marker for an evaluation that client-go would abandon with an error.
struct Abort;

impl JsonPath {
    /// Every value the path selects, in document order. Empty when nothing matches or when
    /// client-go's evaluator would have failed.
    pub fn eval<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        eval_steps(&self.steps, vec![v]).unwrap_or_default()
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn eval_steps<'a>(steps: &[Step], input: Vec<&'a Value>) -> Result<Vec<&'a Value>, Abort> {
    let mut current = input;
    for step in steps {
        current = eval_step(step, current)?;
    }
    Ok(current)
}

fn eval_step<'a>(step: &Step, input: Vec<&'a Value>) -> Result<Vec<&'a Value>, Abort> {
    let mut out = Vec::new();
    match step {
        Step::Field(name) => {
            for v in input {
                if let Some(found) = v.as_object().and_then(|m| m.get(name)) {
                    out.push(found);
                }
            }
        }
        Step::Wildcard => {
            for v in input {
                match v {
                    Value::Object(m) => out.extend(m.values()),
                    Value::Array(a) => out.extend(a),
                    _ => {}
                }
            }
        }
        Step::Recursive => descend(&input, &mut out),
        Step::Slice(slice) => {
            for v in input {
                match v {
                    Value::Null => continue,
                    Value::Array(a) => {
                        if !select_slice(slice, a, &mut out)? {
                            // client-go stops at the first empty selection.
                            break;
                        }
                    }
                    _ => return Err(Abort),
                }
            }
        }
        Step::Union(alternatives) => {
            for alternative in alternatives {
                out.extend(eval_steps(alternative, input.clone())?);
            }
        }
        Step::Filter(filter) => {
            for v in input {
                let Value::Array(items) = v else {
                    return Err(Abort);
                };
                for item in items {
                    if filter_accepts(filter, item)? {
                        out.push(item);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Appends `array[slice]`; returns false when the selection is empty.
fn select_slice<'a>(
    slice: &Slice,
    array: &'a [Value],
    out: &mut Vec<&'a Value>,
) -> Result<bool, Abort> {
    let len = i64::try_from(array.len()).map_err(|_| Abort)?;
    let mut start = slice.start.unwrap_or(0);
    if start < 0 {
        start += len;
    }
    let end = match slice.end {
        SliceEnd::Open => len,
        SliceEnd::At(e) if e < 0 => e + len,
        SliceEnd::At(e) => e,
        SliceEnd::AfterStart(e) if e <= 0 => e + len,
        SliceEnd::AfterStart(e) => e,
    };
    if start == end {
        return Ok(false);
    }
    if start < 0 || start >= len || end < 0 || end > len || start > end {
        return Err(Abort);
    }
    let step = match slice.step {
        None => 1,
        Some(s) if s > 0 => s,
        Some(_) => return Err(Abort),
    };
    let (start, end, step) = (
        usize::try_from(start).map_err(|_| Abort)?,
        usize::try_from(end).map_err(|_| Abort)?,
        usize::try_from(step).map_err(|_| Abort)?,
    );
    out.extend(array[start..end].iter().step_by(step));
    Ok(true)
}

/// `..`: each non-empty object or array, followed by its descendants.
fn descend<'a>(input: &[&'a Value], out: &mut Vec<&'a Value>) {
    for v in input {
        let children: Vec<&Value> = match v {
            Value::Object(m) => m.values().collect(),
            Value::Array(a) => a.iter().collect(),
            _ => continue,
        };
        if !children.is_empty() {
            out.push(v);
            descend(&children, out);
        }
    }
}

fn filter_accepts(filter: &Filter, item: &Value) -> Result<bool, Abort> {
    match filter {
        Filter::Exists(path) => {
            Ok(eval_steps(path, vec![item]).is_ok_and(|found| !found.is_empty()))
        }
        Filter::Compare { left, op, right } => {
            let lefts = eval_steps(left, vec![item])?;
            let left = match lefts.as_slice() {
                [] => return Ok(false),
                [one] => Scalar::of(one)?,
                _ => return Err(Abort),
            };
            let right = match right {
                Operand::Literal(literal) => Scalar::of_literal(literal),
                Operand::Path(path) => {
                    let rights = eval_steps(path, vec![item])?;
                    match rights.as_slice() {
                        [] => return Ok(false),
                        [one] => Scalar::of(one)?,
                        _ => return Err(Abort),
                    }
                }
            };
            compare(*op, &left, &right)
        }
    }
}

/// A comparable value, with Go's kinds: JSON integers are `int64`, other numbers `float64`.
#[derive(Debug, PartialEq, PartialOrd)]
enum Scalar<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bool(bool),
}

impl<'a> Scalar<'a> {
    fn of(v: &'a Value) -> Result<Self, Abort> {
        match v {
            Value::String(s) => Ok(Scalar::Str(s)),
            Value::Bool(b) => Ok(Scalar::Bool(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Scalar::Int(i)),
                None => n.as_f64().map(Scalar::Float).ok_or(Abort),
            },
            Value::Null | Value::Array(_) | Value::Object(_) => Err(Abort),
        }
    }

    fn of_literal(literal: &'a Literal) -> Self {
        match literal {
            Literal::Str(s) => Scalar::Str(s),
            Literal::Int(i) => Scalar::Int(*i),
            Literal::Float(f) => Scalar::Float(*f),
            Literal::Bool(b) => Scalar::Bool(*b),
        }
    }
}

/// Go template comparison: operands of different kinds are an error, not merely unequal.
fn compare(op: CompareOp, left: &Scalar<'_>, right: &Scalar<'_>) -> Result<bool, Abort> {
    if std::mem::discriminant(left) != std::mem::discriminant(right) {
        return Err(Abort);
    }
    let ordered = || match (left, right) {
        (Scalar::Bool(_), _) => Err(Abort),
        _ => left.partial_cmp(right).ok_or(Abort),
    };
    Ok(match op {
        CompareOp::Eq => left == right,
        CompareOp::Ne => left != right,
        CompareOp::Lt => ordered()?.is_lt(),
        CompareOp::Gt => ordered()?.is_gt(),
        CompareOp::Le => ordered()?.is_le(),
        CompareOp::Ge => ordered()?.is_ge(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expr: &str, v: &Value) -> Vec<Value> {
        parse(expr).unwrap().eval(v).into_iter().cloned().collect()
    }

    fn machine() -> Value {
        json!({
            "metadata": {
                "name": "m1",
                "labels": {
                    "cluster.x-k8s.io/cluster-name": "prod",
                    "plain": "yes",
                },
            },
            "spec": {"hostname": "node-1", "accepted": true, "cpus": 8, "ratio": 1.5},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "priority": 1},
                    {"type": "PowerOn", "status": "False", "priority": 2},
                    {"type": "Clean", "status": "True"},
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.1"},
                    {"type": "Hostname", "address": "node-1"},
                ],
            },
        })
    }

    #[test]
    fn dotted_fields_select_nested_values() {
        assert_eq!(eval(".spec.hostname", &machine()), vec![json!("node-1")]);
        assert_eq!(eval("{.spec.cpus}", &machine()), vec![json!(8)]);
        assert_eq!(eval("$.spec.accepted", &machine()), vec![json!(true)]);
    }

    #[test]
    fn escaped_dots_stay_inside_a_label_key() {
        let path = r".metadata.labels.cluster\.x-k8s\.io/cluster-name";
        assert_eq!(eval(path, &machine()), vec![json!("prod")]);
        let bracketed = r".metadata.labels['cluster\.x-k8s\.io/cluster-name']";
        assert_eq!(eval(bracketed, &machine()), vec![json!("prod")]);
    }

    #[test]
    fn quoted_key_with_plain_dots_splits_like_client_go() {
        // client-go re-parses `['a.b']` as `.a.b`.
        let v = json!({"a": {"b": 1}, "a.b": 2});
        assert_eq!(eval("['a.b']", &v), vec![json!(1)]);
        // As in client-go, a '.' right before '[' names the empty key.
        assert!(eval(".['a']", &v).is_empty());
        assert_eq!(
            eval(".metadata.labels['plain']", &machine()),
            vec![json!("yes")]
        );
    }

    #[test]
    fn missing_keys_yield_nothing() {
        assert!(eval(".spec.nothing.deeper", &machine()).is_empty());
        assert!(eval(".metadata.labels.cluster.x-k8s.io/cluster-name", &machine()).is_empty());
    }

    #[test]
    fn indices_count_from_either_end() {
        assert_eq!(
            eval(".status.conditions[0].type", &machine()),
            vec![json!("Ready")]
        );
        assert_eq!(
            eval(".status.conditions[-1].type", &machine()),
            vec![json!("Clean")]
        );
        assert_eq!(
            eval(".status.conditions[1:].type", &machine()),
            vec![json!("PowerOn"), json!("Clean")]
        );
        assert_eq!(
            eval(".status.conditions[0:3:2].type", &machine()),
            vec![json!("Ready"), json!("Clean")]
        );
    }

    #[test]
    fn out_of_range_index_or_index_of_object_yields_nothing() {
        assert!(eval(".status.conditions[7]", &machine()).is_empty());
        assert!(eval(".spec[0]", &machine()).is_empty());
    }

    #[test]
    fn wildcards_expand_arrays_and_objects() {
        assert_eq!(
            eval(".status.addresses[*].address", &machine()),
            vec![json!("10.0.0.1"), json!("node-1")]
        );
        assert_eq!(
            eval(".metadata.labels.*", &machine()),
            vec![json!("prod"), json!("yes")]
        );
    }

    #[test]
    fn filters_compare_strings_numbers_and_booleans() {
        let m = machine();
        assert_eq!(
            eval(r#".status.conditions[?(@.type=="Ready")].status"#, &m),
            vec![json!("True")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.status != 'True')].type", &m),
            vec![json!("PowerOn")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.priority==2)].type", &m),
            vec![json!("PowerOn")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.priority>=1)].type", &m),
            vec![json!("Ready"), json!("PowerOn")]
        );
        let flags = json!({"items": [{"on": true, "n": "a"}, {"on": false, "n": "b"}]});
        assert_eq!(eval(".items[?(@.on==false)].n", &flags), vec![json!("b")]);
    }

    #[test]
    fn filter_on_escaped_label_key() {
        let v = json!({"items": [
            {"metadata": {"labels": {"kubernetes.io/hostname": "a"}}, "kind": "A"},
            {"metadata": {"labels": {"kubernetes.io/hostname": "b"}}, "kind": "B"},
        ]});
        let path = r#".items[?(@.metadata.labels.kubernetes\.io/hostname=="b")].kind"#;
        assert_eq!(eval(path, &v), vec![json!("B")]);
    }

    #[test]
    fn comparing_different_kinds_yields_nothing_at_all() {
        // client-go fails the whole evaluation, so even the matching element is not returned.
        let v = json!({"items": [{"x": "1"}, {"x": 1}]});
        assert!(eval(".items[?(@.x==1)]", &v).is_empty());
    }

    #[test]
    fn existence_filter_keeps_elements_with_the_field() {
        assert_eq!(
            eval(".status.conditions[?(@.priority)].type", &machine()),
            vec![json!("Ready"), json!("PowerOn")]
        );
    }

    #[test]
    fn unions_and_recursive_descent() {
        assert_eq!(
            eval(".status.conditions[0,2].type", &machine()),
            vec![json!("Ready"), json!("Clean")]
        );
        assert_eq!(
            eval(".spec['hostname','cpus']", &machine()),
            vec![json!("node-1"), json!(8)]
        );
        assert_eq!(
            eval("..address", &machine()),
            vec![json!("10.0.0.1"), json!("node-1")]
        );
    }

    #[test]
    fn filter_parentheses_inside_quotes_do_not_close_it() {
        let v = json!({"items": [{"n": "a)b", "v": 1}, {"n": "c", "v": 2}]});
        assert_eq!(eval(r#".items[?(@.n=="a)b")].v"#, &v), vec![json!(1)]);
    }

    #[test]
    fn errors_say_what_and_where() {
        assert_eq!(parse(""), Err(JsonPathError::Empty));
        assert_eq!(parse("{}"), Err(JsonPathError::Empty));
        assert_eq!(
            parse(".a[0"),
            Err(JsonPathError::UnterminatedBracket { at: 2 })
        );
        assert_eq!(
            parse(".a[x]"),
            Err(JsonPathError::InvalidIndex {
                text: "x".into(),
                at: 3
            })
        );
        assert_eq!(parse("{.a"), Err(JsonPathError::UnclosedBrace { at: 0 }));
        assert_eq!(
            parse("{.a}{.b}"),
            Err(JsonPathError::TrailingInput { found: '{', at: 4 })
        );
        assert_eq!(
            parse(".a[?(@.b=<1)]"),
            Err(JsonPathError::FilterOperator {
                op: "=<".into(),
                at: 8
            })
        );
        assert_eq!(
            parse(".a[?(@.b==1)"),
            Err(JsonPathError::FilterNotClosed { at: 12 })
        );
        assert_eq!(
            parse(".a[?(@.b==1"),
            Err(JsonPathError::UnterminatedFilter { at: 2 })
        );
        assert_eq!(
            parse("{range .items[*]}"),
            Err(JsonPathError::Unsupported {
                what: "\"range\"".into(),
                at: 1
            })
        );
        assert_eq!(
            parse(".a[0]#"),
            Err(JsonPathError::UnexpectedChar { found: '#', at: 5 })
        );
        let message = parse(".a[0").unwrap_err().to_string();
        assert!(message.contains("offset 2"), "{message}");
    }

    #[test]
    fn display_returns_the_expression_as_written() {
        let path = parse(r".metadata.labels.a\.b").unwrap();
        assert_eq!(path.to_string(), r".metadata.labels.a\.b");
    }
}
