//! HTTP framing of the embedded API server: authentication, routing, body limits, content
//! negotiation (JSON, YAML, Table, PartialObjectMetadata) and rendering of results and errors.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::apiserver::request::{Query, ResourcePath, Route, route};
use crate::apiserver::resources::ResourceInfo;
use crate::apiserver::status::{ApiError, success};
use crate::apiserver::verbs::{
    Api, DeleteOptions, DeleteOutcome, ListOptions, PatchType, WriteOptions,
};
use crate::apiserver::{apply, protobuf, selector, table, watch};

pub type Body = BoxBody<Bytes, Infallible>;

/// Version reported at `/version`: the Kubernetes API level this server imitates.
pub const KUBE_VERSION: (&str, &str) = ("1", "33");

/// Request-wide settings.
pub struct Server {
    pub api: Arc<Api>,
    pub token: String,
    pub max_body: usize,
    pub server_address: String,
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    bytes_response(
        code,
        Bytes::from(serde_json::to_vec(body).expect("a serde_json::Value always serializes")),
    )
}

fn bytes_response(code: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.to_status())
}

/// Parses a YAML (or JSON, which is YAML) document into JSON.
pub fn parse_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not UTF-8: {e}")))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid YAML: {e}")))
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a create/update body by its content type.
/// `protobuf_ok`: the resource is a built-in kind kube-apiserver accepts protobuf for (custom
/// resources have no protobuf form, and kube-apiserver answers 415 for them too).
fn parse_body(headers: &HeaderMap, body: &[u8], protobuf_ok: bool) -> Result<Value, ApiError> {
    let value = match media_type(headers).as_str() {
        "application/json" | "" => serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("the request body is not valid JSON: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => parse_yaml(body)?,
        // kubectl's `create namespace|secret|configmap` send protobuf.
        "application/vnd.kubernetes.protobuf" if protobuf_ok => match protobuf::decode(body) {
            Ok(v) => v,
            Err(e @ protobuf::ProtobufError::UnsupportedKind { .. }) => {
                return Err(ApiError::UnsupportedMediaType(e.to_string()));
            }
            Err(e) => return Err(ApiError::BadRequest(e.to_string())),
        },
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (Namespace, Secret, ConfigMap)"
            )));
        }
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be an object (a Kubernetes resource)".into(),
        ));
    }
    Ok(value)
}

/// How the client wants objects rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    Json,
    Table,
    PartialMetadata,
}

fn negotiate(headers: &HeaderMap) -> Result<Render, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mut json_ok = false;
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let mt = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<&str> = parts.collect();
        let as_ = params
            .iter()
            .find_map(|p| p.strip_prefix("as="))
            .unwrap_or("");
        match (mt.as_str(), as_) {
            ("application/json", "Table") => return Ok(Render::Table),
            ("application/json", "PartialObjectMetadata" | "PartialObjectMetadataList") => {
                return Ok(Render::PartialMetadata);
            }
            ("application/json" | "*/*" | "application/*" | "", "") => json_ok = true,
            _ => {}
        }
    }
    if json_ok {
        Ok(Render::Json)
    } else {
        Err(ApiError::NotAcceptable(format!(
            "only the following media types are accepted: application/json (asked for {accept})"
        )))
    }
}

fn authorized(server: &Server, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = value.strip_prefix("Bearer ") else {
        return false;
    };
    // Compare in constant time so the token cannot be guessed byte by byte.
    let (a, b) = (token.trim().as_bytes(), server.token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Entry point for one HTTP request.
pub async fn handle(
    server: Arc<Server>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::debug_span!("request", %method, %path);
    let _enter = span.enter();
    let response = match dispatch(&server, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.code() >= 500 {
                tracing::warn!(%method, %path, error = %e, "request failed");
            }
            error_response(&e)
        }
    };
    Ok(response)
}

async fn read_body(server: &Server, body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, server.max_body).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::TooLarge(server.max_body))
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

async fn dispatch(server: &Server, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let r = route(req.uri().path()).map_err(|_| ApiError::NoRoute);
    let public = matches!(r, Ok(Route::Version | Route::Health));
    if !public && !authorized(server, req.headers()) {
        return Err(ApiError::Unauthorized);
    }
    let r = r?;
    let registry = server.api.registry();
    let not_found = || ApiError::NoRoute;
    let get_only = |method: &Method| -> Result<(), ApiError> {
        if method == Method::GET || method == Method::HEAD {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )))
        }
    };
    match r {
        Route::Version => {
            get_only(req.method())?;
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "major": KUBE_VERSION.0, "minor": KUBE_VERSION.1,
                    "gitVersion": format!("v{}.{}.0-siderite.{}", KUBE_VERSION.0, KUBE_VERSION.1, env!("CARGO_PKG_VERSION")),
                    "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
                    "goVersion": "", "compiler": "rustc", "platform": "linux/amd64"
                }),
            ))
        }
        Route::Health => {
            let mut r = Response::new(full("ok"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            Ok(r)
        }
        Route::CoreVersions => {
            get_only(req.method())?;
            Ok(json_response(
                StatusCode::OK,
                &registry.core_versions(&server.server_address),
            ))
        }
        Route::Groups => {
            get_only(req.method())?;
            Ok(json_response(StatusCode::OK, &registry.group_list()))
        }
        Route::Group(g) => {
            let doc = registry.group(&g).ok_or_else(not_found)?;
            get_only(req.method())?;
            Ok(json_response(StatusCode::OK, &doc))
        }
        Route::ResourceList { group, version } => {
            let doc = registry
                .resource_list(&group, &version)
                .ok_or_else(not_found)?;
            get_only(req.method())?;
            Ok(json_response(StatusCode::OK, &doc))
        }
        Route::OpenApi(rest) => {
            get_only(req.method())?;
            openapi_document(&registry, &rest, req.headers())
        }
        Route::Resource(path) => {
            let info = registry
                .get(&path.group, &path.version, &path.resource)
                .ok_or(ApiError::NoRoute)?;
            resource(server, &info, &path, req).await
        }
    }
}

fn write_options(
    query: &Query,
    headers: &HeaderMap,
    apply: bool,
    subresource: Option<&str>,
) -> WriteOptions {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    let manager = match query.get("fieldManager") {
        Some(m) => m.to_owned(),
        // Apply demands an explicit manager; the verb reports its absence.
        None if apply => String::new(),
        None => apply::manager_from_user_agent(user_agent),
    };
    WriteOptions {
        dry_run: query.get("dryRun") == Some("All"),
        manager,
        force: query.flag("force"),
        strict: query.get("fieldValidation") == Some("Strict"),
        subresource: subresource.map(str::to_owned),
    }
}

fn list_options(query: &Query) -> Result<ListOptions, ApiError> {
    let labels = query
        .get("labelSelector")
        .map(selector::parse_label_selector)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let fields = query
        .get("fieldSelector")
        .map(selector::parse_field_selector)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let limit = query
        .get("limit")
        .map(|l| {
            l.parse::<usize>().map_err(|_| {
                ApiError::BadRequest(format!("limit must be a non-negative integer, not {l:?}"))
            })
        })
        .transpose()?;
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: query.get("continue").map(str::to_owned),
    })
}

async fn resource(
    server: &Server,
    info: &Arc<ResourceInfo>,
    path: &ResourcePath,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    let headers = req.headers().clone();
    let render = negotiate(&headers)?;
    let api = &server.api;
    let ns = path.namespace.as_deref();
    if path.namespace.is_some() && !info.namespaced {
        return Err(ApiError::NotFound(
            info.target(path.name.as_deref().unwrap_or_default()),
        ));
    }
    let sub = path.subresource.as_deref();
    if let Some(s) = sub {
        let ok = (s == "status" && info.status_subresource)
            || (s == "finalize"
                && info.builtin == Some(crate::apiserver::resources::Builtin::Namespace));
        if !ok {
            return Err(ApiError::NotFound(info.target(&format!(
                "{}/{s}",
                path.name.as_deref().unwrap_or_default()
            ))));
        }
    }
    match (&method, path.name.as_deref()) {
        (&Method::GET, None) => {
            if path.watch_prefix || query.flag("watch") {
                if query.flag("sendInitialEvents") {
                    return Err(ApiError::Invalid {
                        target: Box::new(crate::apiserver::status::Target {
                            group: "meta.k8s.io".into(),
                            kind: "ListOptions".into(),
                            ..Default::default()
                        }),
                        causes: vec![crate::apiserver::status::StatusCause {
                            reason: "FieldValueForbidden".into(),
                            message: "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled".into(),
                            field: "sendInitialEvents".into(),
                        }],
                    });
                }
                let opts = list_options(&query)?;
                return watch::serve(
                    api.clone(),
                    info.clone(),
                    ns.map(str::to_owned),
                    opts,
                    &query,
                    render,
                );
            }
            let opts = list_options(&query)?;
            let result = api.list(info, ns, &opts)?;
            render_list(info, result, render, &query)
        }
        (&Method::GET, Some(name)) => {
            if path.watch_prefix || query.flag("watch") {
                let mut opts = list_options(&query)?;
                opts.fields = Some(
                    selector::parse_field_selector(&format!("metadata.name={name}"))
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?,
                );
                return watch::serve(
                    api.clone(),
                    info.clone(),
                    ns.map(str::to_owned),
                    opts,
                    &query,
                    render,
                );
            }
            let stored = api.get(info, ns, name)?;
            match render {
                Render::Json => Ok(bytes_response(
                    StatusCode::OK,
                    Api::view_bytes(info, &stored),
                )),
                Render::Table => Ok(json_response(
                    StatusCode::OK,
                    &build_table(
                        info,
                        &[Api::view(info, &stored)],
                        &query,
                        json!({"resourceVersion": stored.rv.to_string()}),
                    )?,
                )),
                Render::PartialMetadata => Ok(json_response(
                    StatusCode::OK,
                    &partial(&Api::view(info, &stored)),
                )),
            }
        }
        (&Method::POST, None) => {
            let body = read_body(server, req.into_body()).await?;
            let value = parse_body(&headers, &body, info.builtin.is_some())?;
            let opts = write_options(&query, &headers, false, sub);
            let created = api.create(info, ns, value, &opts).await?;
            Ok(bytes_response(StatusCode::CREATED, created))
        }
        (&Method::PUT, Some(name)) => {
            let body = read_body(server, req.into_body()).await?;
            let value = parse_body(&headers, &body, info.builtin.is_some())?;
            let opts = write_options(&query, &headers, false, sub);
            let updated = api.update(info, ns, name, value, &opts).await?;
            Ok(bytes_response(StatusCode::OK, updated))
        }
        (&Method::PATCH, Some(name)) => {
            let patch_type = match media_type(&headers).as_str() {
                "application/merge-patch+json" => PatchType::Merge,
                "application/json-patch+json" => PatchType::Json,
                "application/apply-patch+yaml" => PatchType::Apply,
                "application/strategic-merge-patch+json" if info.builtin.is_some() => {
                    // The built-in kinds served here have no patch strategies on their fields
                    // that differ from a merge patch.
                    PatchType::Merge
                }
                _ => {
                    return Err(ApiError::UnsupportedMediaType(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
                    ));
                }
            };
            let body = read_body(server, req.into_body()).await?;
            let opts = write_options(&query, &headers, patch_type == PatchType::Apply, sub);
            let patched = api.patch(info, ns, name, patch_type, &body, &opts).await?;
            Ok(bytes_response(StatusCode::OK, patched))
        }
        (&Method::DELETE, Some(name)) => {
            let body = read_body(server, req.into_body()).await?;
            let opts = delete_options(&query, &body)?;
            match api.delete(info, ns, name, &opts).await? {
                DeleteOutcome::Pending(obj) => Ok(json_response(StatusCode::OK, &obj)),
                DeleteOutcome::Deleted(obj) => {
                    let uid = obj["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    Ok(json_response(
                        StatusCode::OK,
                        &success(&info.target(name), &uid),
                    ))
                }
            }
        }
        (&Method::DELETE, None) => {
            let body = read_body(server, req.into_body()).await?;
            let opts = delete_options(&query, &body)?;
            let list = api.list(info, ns, &list_options(&query)?)?;
            let mut deleted = Vec::new();
            for item in &list.items {
                let item_ns = Some(item.summary.namespace.as_str()).filter(|n| !n.is_empty());
                match api.delete(info, item_ns, &item.summary.name, &opts).await {
                    Ok(DeleteOutcome::Deleted(v) | DeleteOutcome::Pending(v)) => deleted.push(v),
                    Err(ApiError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"apiVersion": info.api_version(), "kind": info.list_kind(),
                        "metadata": {"resourceVersion": api.store.current_rv().to_string()}, "items": deleted}),
            ))
        }
        _ => Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

fn delete_options(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let parsed: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("the DeleteOptions body is not valid JSON: {e}"))
        })?
    };
    let from_body = |k: &str| parsed[k].as_str().map(str::to_owned);
    let dry_run = query.get("dryRun") == Some("All")
        || parsed["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        propagation: query
            .get("propagationPolicy")
            .map(str::to_owned)
            .or_else(|| from_body("propagationPolicy"))
            .or_else(|| match parsed["orphanDependents"].as_bool() {
                Some(true) => Some("Orphan".into()),
                _ => None,
            }),
        precondition_uid: parsed["preconditions"]["uid"].as_str().map(str::to_owned),
        precondition_rv: parsed["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned),
        dry_run,
    })
}

/// `PartialObjectMetadata` for one object.
pub fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// `/openapi/v2` (an empty document: kubectl uses v3) and `/openapi/v3[/...]`.
fn openapi_document(
    registry: &crate::apiserver::resources::Registry,
    rest: &str,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    use crate::apiserver::openapi;
    let parts: Vec<&str> = rest.split('/').collect();
    let doc = match parts.as_slice() {
        ["v2"] => {
            let wants_protobuf = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("protobuf"));
            if wants_protobuf {
                // A zero-length protobuf message is a valid, empty OpenAPI v2 Document.
                let mut r = Response::new(full(Bytes::new()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(openapi::V2_PROTOBUF),
                );
                return Ok(r);
            }
            json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
                   "paths": {}, "definitions": {}})
        }
        ["v3"] => openapi::v3_root(registry),
        ["v3", "api", version] => {
            openapi::v3_group_version(registry, "", version).ok_or(ApiError::NoRoute)?
        }
        ["v3", "apis", group, version] => {
            openapi::v3_group_version(registry, group, version).ok_or(ApiError::NoRoute)?
        }
        _ => return Err(ApiError::NoRoute),
    };
    Ok(json_response(StatusCode::OK, &doc))
}

/// The column set for a resource: built-in kinds have their own, CRDs their printer columns.
pub fn columns(info: &ResourceInfo) -> Result<Vec<table::Column>, ApiError> {
    if info.builtin.is_some()
        && let Some(c) = table::builtin_columns(&info.kind)
    {
        return Ok(c);
    }
    table::crd_columns(&info.printer_columns).map_err(|e| {
        ApiError::Internal(format!(
            "the printer columns of {} cannot be used: {e}",
            info.plural
        ))
    })
}

pub fn build_table(
    info: &ResourceInfo,
    objects: &[Value],
    query: &Query,
    list_meta: Value,
) -> Result<Value, ApiError> {
    let include = match query.get("includeObject") {
        Some("None") => table::IncludeObject::None,
        Some("Object") => table::IncludeObject::Object,
        _ => table::IncludeObject::Metadata,
    };
    // The built-in Event columns read core/v1 fields; the events.k8s.io view is converted back.
    let core: Vec<Value>;
    let objects = if info.builtin == Some(crate::apiserver::resources::Builtin::EventsV1) {
        core = objects
            .iter()
            .map(|o| crate::apiserver::builtin::event_from_v1(o.clone()))
            .collect();
        &core[..]
    } else {
        objects
    };
    Ok(table::build_table(
        &columns(info)?,
        objects,
        include,
        list_meta,
        jiff::Timestamp::now(),
    ))
}

fn render_list(
    info: &ResourceInfo,
    result: crate::apiserver::verbs::ListResult,
    render: Render,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let mut list_meta = json!({"resourceVersion": result.rv.to_string()});
    if let Some(c) = &result.continue_token {
        list_meta["continue"] = json!(c);
    }
    if let Some(n) = result.remaining {
        list_meta["remainingItemCount"] = json!(n);
    }
    match render {
        Render::Table => {
            let objects: Vec<Value> = result.items.iter().map(|s| Api::view(info, s)).collect();
            Ok(json_response(
                StatusCode::OK,
                &build_table(info, &objects, query, list_meta)?,
            ))
        }
        Render::PartialMetadata => {
            let items: Vec<Value> = result
                .items
                .iter()
                .map(|s| partial(&Api::view(info, s)))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                        "metadata": list_meta, "items": items}),
            ))
        }
        Render::Json => {
            // Stitch the stored JSON together instead of re-encoding every object.
            let mut out = BytesMut::with_capacity(
                128 + result.items.iter().map(|s| s.json.len() + 1).sum::<usize>(),
            );
            out.extend_from_slice(
                format!(
                    "{{\"apiVersion\":\"{}\",\"kind\":\"{}\",\"metadata\":{},\"items\":[",
                    info.api_version(),
                    info.list_kind(),
                    list_meta
                )
                .as_bytes(),
            );
            for (i, s) in result.items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b",");
                }
                out.extend_from_slice(&Api::view_bytes(info, s));
            }
            out.extend_from_slice(b"]}");
            Ok(bytes_response(StatusCode::OK, out.freeze()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn kubectl_table_accept_header_selects_table() {
        let h = accept(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        );
        assert_eq!(negotiate(&h).unwrap(), Render::Table);
        assert_eq!(
            negotiate(&accept("application/json")).unwrap(),
            Render::Json
        );
        assert_eq!(negotiate(&accept("*/*")).unwrap(), Render::Json);
        assert_eq!(
            negotiate(&accept(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
            ))
            .unwrap(),
            Render::PartialMetadata
        );
        assert_eq!(
            negotiate(&accept("application/vnd.kubernetes.protobuf"))
                .unwrap_err()
                .code(),
            406
        );
    }

    #[test]
    fn bodies_are_decoded_by_content_type() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/yaml".parse().unwrap());
        let v = parse_body(
            &h,
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            false,
        )
        .unwrap();
        assert_eq!(v["metadata"]["name"], "a");
        h.insert(
            header::CONTENT_TYPE,
            "application/vnd.kubernetes.protobuf".parse().unwrap(),
        );
        assert_eq!(parse_body(&h, b"\x00", true).unwrap_err().code(), 400);
        assert_eq!(
            parse_body(&h, b"\x00", false).unwrap_err().code(),
            415,
            "custom resources have no protobuf form"
        );
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(parse_body(&h, b"x", true).unwrap_err().code(), 415);
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let e = parse_body(&h, b"{\"a\":", true).unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(e.to_string().contains("not valid JSON"));
        assert_eq!(parse_body(&h, b"[1]", true).unwrap_err().code(), 400);
    }

    #[test]
    fn delete_options_come_from_body_or_query() {
        let q = Query::parse(Some("propagationPolicy=Foreground"));
        assert_eq!(
            delete_options(&q, b"").unwrap().propagation.as_deref(),
            Some("Foreground")
        );
        let body =
            br#"{"kind":"DeleteOptions","propagationPolicy":"Orphan","preconditions":{"uid":"u"}}"#;
        let o = delete_options(&Query::default(), body).unwrap();
        assert_eq!(o.propagation.as_deref(), Some("Orphan"));
        assert_eq!(o.precondition_uid.as_deref(), Some("u"));
        assert_eq!(
            delete_options(&Query::default(), b"{").unwrap_err().code(),
            400
        );
    }
}
