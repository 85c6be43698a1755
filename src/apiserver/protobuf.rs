//! Decoding of the Kubernetes protobuf wire format for the built-in kinds that kubectl sends as
//! protobuf (`kubectl create namespace|secret|configmap` use
//! `application/vnd.kubernetes.protobuf` bodies). Decodes into the same JSON the server stores.
//!
//! Format: the 4-byte magic `k8s\0`, then a `runtime.Unknown` message (field 1 TypeMeta, field 2
//! the raw object, fields 3/4 encodings), whose raw bytes are the object in gogo-protobuf
//! encoding (maps are repeated `{key = 1, value = 2}` entries). Only the fields a client can
//! usefully send on create/update are read; server-owned metadata is ignored, as the server
//! replaces it anyway.

use base64::Engine;
use serde_json::{Map, Value, json};

/// `k8s\0`: the envelope magic.
pub const MAGIC: &[u8; 4] = b"k8s\0";

// runtime.Unknown
const UNKNOWN_TYPE_META: u32 = 1;
const UNKNOWN_RAW: u32 = 2;
// TypeMeta
const TYPE_META_API_VERSION: u32 = 1;
const TYPE_META_KIND: u32 = 2;
// ObjectMeta
const META_NAME: u32 = 1;
const META_GENERATE_NAME: u32 = 2;
const META_NAMESPACE: u32 = 3;
const META_RESOURCE_VERSION: u32 = 6;
const META_LABELS: u32 = 11;
const META_ANNOTATIONS: u32 = 12;
const META_FINALIZERS: u32 = 14;
// Every kind: field 1 is ObjectMeta.
const OBJECT_METADATA: u32 = 1;
// Namespace
const NAMESPACE_SPEC: u32 = 2;
const NAMESPACE_SPEC_FINALIZERS: u32 = 1;
// ConfigMap
const CONFIGMAP_DATA: u32 = 2;
const CONFIGMAP_BINARY_DATA: u32 = 3;
const CONFIGMAP_IMMUTABLE: u32 = 4;
// Secret
const SECRET_DATA: u32 = 2;
const SECRET_TYPE: u32 = 3;
const SECRET_STRING_DATA: u32 = 4;
const SECRET_IMMUTABLE: u32 = 5;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtobufError {
    #[error("the protobuf body does not start with the Kubernetes magic bytes \"k8s\\0\"")]
    NoMagic,
    #[error("the protobuf body is truncated or malformed at byte {offset}")]
    Malformed { offset: usize },
    #[error("field {field} of {message} has wire type {wire}, expected {expected}")]
    WireType {
        message: &'static str,
        field: u32,
        wire: u8,
        expected: u8,
    },
    #[error("a string field of {message} is not UTF-8")]
    Utf8 { message: &'static str },
    #[error(
        "protobuf bodies are accepted for Namespace, Secret and ConfigMap only, not {kind}; send JSON or YAML"
    )]
    UnsupportedKind { kind: String },
}

/// One decoded field: its number and its payload.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Reader<'a> {
        Reader { buf, pos: 0, base }
    }

    fn malformed(&self) -> ProtobufError {
        ProtobufError::Malformed {
            offset: self.base + self.pos,
        }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.malformed())?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.malformed())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.malformed())?;
        let slice = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.malformed())?;
        self.pos = end;
        Ok(slice)
    }

    /// The next field, or `None` at the end of the message.
    fn next(&mut self) -> Result<Option<(u32, Field<'a>, usize)>, ProtobufError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| self.malformed())?;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| self.malformed())?;
                let start = self.base + self.pos;
                let bytes = self.take(len)?;
                return Ok(Some((field, Field::Bytes(bytes), start)));
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            _ => return Err(self.malformed()),
        };
        Ok(Some((field, value, self.base + self.pos)))
    }
}

fn bytes<'a>(
    message: &'static str,
    field: u32,
    value: Field<'a>,
) -> Result<&'a [u8], ProtobufError> {
    match value {
        Field::Bytes(b) => Ok(b),
        Field::Varint(_) => Err(ProtobufError::WireType {
            message,
            field,
            wire: 0,
            expected: 2,
        }),
        Field::Fixed => Err(ProtobufError::WireType {
            message,
            field,
            wire: 1,
            expected: 2,
        }),
    }
}

fn string(message: &'static str, field: u32, value: Field<'_>) -> Result<String, ProtobufError> {
    let b = bytes(message, field, value)?;
    String::from_utf8(b.to_vec()).map_err(|_| ProtobufError::Utf8 { message })
}

fn boolean(message: &'static str, field: u32, value: Field<'_>) -> Result<bool, ProtobufError> {
    match value {
        Field::Varint(v) => Ok(v != 0),
        _ => Err(ProtobufError::WireType {
            message,
            field,
            wire: 2,
            expected: 0,
        }),
    }
}

/// A map entry `{key = 1, value = 2}`; `binary` values are base64-encoded as in JSON.
fn map_entry(
    message: &'static str,
    entry: &[u8],
    base: usize,
    binary: bool,
) -> Result<(String, Value), ProtobufError> {
    let mut r = Reader::new(entry, base);
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    while let Some((field, v, _)) = r.next()? {
        match field {
            1 => key = string(message, field, v)?,
            2 if binary => {
                value = Value::String(
                    base64::engine::general_purpose::STANDARD.encode(bytes(message, field, v)?),
                );
            }
            2 => value = Value::String(string(message, field, v)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(map: &mut Value, (k, v): (String, Value)) {
    if !map.is_object() {
        *map = Value::Object(Map::new());
    }
    if let Some(m) = map.as_object_mut() {
        m.insert(k, v);
    }
}

fn object_meta(buf: &[u8], base: usize) -> Result<Value, ProtobufError> {
    const M: &str = "ObjectMeta";
    let mut meta = json!({});
    let mut r = Reader::new(buf, base);
    while let Some((field, v, at)) = r.next()? {
        match field {
            META_NAME => meta["name"] = json!(string(M, field, v)?),
            META_GENERATE_NAME => meta["generateName"] = json!(string(M, field, v)?),
            META_NAMESPACE => meta["namespace"] = json!(string(M, field, v)?),
            META_RESOURCE_VERSION => meta["resourceVersion"] = json!(string(M, field, v)?),
            META_LABELS => {
                let e = map_entry(M, bytes(M, field, v)?, at, false)?;
                insert_entry(&mut meta["labels"], e);
            }
            META_ANNOTATIONS => {
                let e = map_entry(M, bytes(M, field, v)?, at, false)?;
                insert_entry(&mut meta["annotations"], e);
            }
            META_FINALIZERS => {
                let f = string(M, field, v)?;
                match meta["finalizers"].as_array_mut() {
                    Some(a) => a.push(json!(f)),
                    None => meta["finalizers"] = json!([f]),
                }
            }
            _ => {}
        }
    }
    // Empty strings are protobuf's "unset".
    if let Some(m) = meta.as_object_mut() {
        m.retain(|_, v| v.as_str() != Some(""));
    }
    Ok(meta)
}

fn decode_kind(kind: &str, raw: &[u8], base: usize) -> Result<Value, ProtobufError> {
    let mut obj = json!({"apiVersion": "v1", "kind": kind});
    let mut r = Reader::new(raw, base);
    while let Some((field, v, at)) = r.next()? {
        match (kind, field) {
            (_, OBJECT_METADATA) => obj["metadata"] = object_meta(bytes("object", field, v)?, at)?,
            ("Namespace", NAMESPACE_SPEC) => {
                let mut spec = Reader::new(bytes("Namespace", field, v)?, at);
                let mut finalizers = Vec::new();
                while let Some((f, sv, _)) = spec.next()? {
                    if f == NAMESPACE_SPEC_FINALIZERS {
                        finalizers.push(json!(string("NamespaceSpec", f, sv)?));
                    }
                }
                obj["spec"] = json!({"finalizers": finalizers});
            }
            ("ConfigMap", CONFIGMAP_DATA) => {
                let e = map_entry("ConfigMap", bytes("ConfigMap", field, v)?, at, false)?;
                insert_entry(&mut obj["data"], e);
            }
            ("ConfigMap", CONFIGMAP_BINARY_DATA) => {
                let e = map_entry("ConfigMap", bytes("ConfigMap", field, v)?, at, true)?;
                insert_entry(&mut obj["binaryData"], e);
            }
            ("ConfigMap", CONFIGMAP_IMMUTABLE) | ("Secret", SECRET_IMMUTABLE) => {
                obj["immutable"] = json!(boolean("object", field, v)?);
            }
            ("Secret", SECRET_DATA) => {
                let e = map_entry("Secret", bytes("Secret", field, v)?, at, true)?;
                insert_entry(&mut obj["data"], e);
            }
            ("Secret", SECRET_STRING_DATA) => {
                let e = map_entry("Secret", bytes("Secret", field, v)?, at, false)?;
                insert_entry(&mut obj["stringData"], e);
            }
            ("Secret", SECRET_TYPE) => obj["type"] = json!(string("Secret", field, v)?),
            _ => {}
        }
    }
    Ok(obj)
}

/// Decodes a `application/vnd.kubernetes.protobuf` body into JSON.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let mut r = Reader::new(rest, MAGIC.len());
    let (mut kind, mut api_version, mut raw) = (String::new(), String::new(), None);
    while let Some((field, v, at)) = r.next()? {
        match field {
            UNKNOWN_TYPE_META => {
                let mut t = Reader::new(bytes("Unknown", field, v)?, at);
                while let Some((f, tv, _)) = t.next()? {
                    match f {
                        TYPE_META_API_VERSION => api_version = string("TypeMeta", f, tv)?,
                        TYPE_META_KIND => kind = string("TypeMeta", f, tv)?,
                        _ => {}
                    }
                }
            }
            UNKNOWN_RAW => raw = Some((bytes("Unknown", field, v)?, at)),
            _ => {}
        }
    }
    if api_version != "v1" || !matches!(kind.as_str(), "Namespace" | "Secret" | "ConfigMap") {
        return Err(ProtobufError::UnsupportedKind {
            kind: format!("{api_version}/{kind}"),
        });
    }
    let (raw, at) = raw.unwrap_or((&[], 0));
    decode_kind(&kind, raw, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field(n: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(n) << 3 | 2, &mut out);
        varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        [field(1, k.as_bytes()), field(2, v)].concat()
    }

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let type_meta = [field(1, b"v1"), field(2, kind.as_bytes())].concat();
        let unknown = [
            field(1, &type_meta),
            field(2, &raw),
            field(3, b""),
            field(4, b""),
        ]
        .concat();
        [MAGIC.to_vec(), unknown].concat()
    }

    #[test]
    fn secret_from_kubectl_create_secret_generic_decodes_to_base64_data() {
        // What `kubectl create secret generic s --from-literal=user=admin -n team` sends.
        let meta = [field(1, b"s"), field(3, b"team")].concat();
        let raw = [
            field(1, &meta),
            field(2, &entry("user", b"admin")),
            field(3, b"Opaque"),
        ]
        .concat();
        let v = decode(&envelope("Secret", raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "s", "namespace": "team"},
                   "data": {"user": "YWRtaW4="}, "type": "Opaque"})
        );
    }

    #[test]
    fn namespace_and_configmap_with_labels_decode() {
        let meta = [field(1, b"team-a"), field(11, &entry("env", b"lab"))].concat();
        let ns = decode(&envelope("Namespace", field(1, &meta))).unwrap();
        assert_eq!(ns["metadata"]["labels"]["env"], "lab");
        assert_eq!(ns["metadata"]["name"], "team-a");
        let cm = [field(1, &field(1, b"c")), field(2, &entry("k", b"v"))].concat();
        let cm = decode(&envelope("ConfigMap", cm)).unwrap();
        assert_eq!(cm["data"]["k"], "v");
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        assert_eq!(decode(b"{\"a\":1}"), Err(ProtobufError::NoMagic));
        let mut truncated = envelope("Secret", field(1, &field(1, b"s")));
        truncated.truncate(truncated.len() - 1);
        assert!(matches!(
            decode(&truncated),
            Err(ProtobufError::Malformed { .. })
        ));
        assert!(matches!(
            decode(&envelope("Pod", vec![])),
            Err(ProtobufError::UnsupportedKind { .. })
        ));
        // Every prefix of a valid body decodes or fails cleanly.
        let good = envelope(
            "Secret",
            [field(1, &field(1, b"s")), field(2, &entry("a", b"b"))].concat(),
        );
        for n in 0..good.len() {
            let _ = decode(&good[..n]);
        }
    }
}
