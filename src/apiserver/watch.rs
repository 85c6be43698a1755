//! Watch streams: newline-delimited JSON events from the store's history, with the
//! kube-apiserver behaviours clients depend on — synthetic ADDED events for the current state
//! when no version is given, an in-band 410 ERROR event (never an HTTP 410) when the version is
//! too old, BOOKMARK events, `timeoutSeconds`, and ADDED/DELETED when an object moves into or
//! out of the selection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::apiserver::http::{Body, Render, build_table, partial};
use crate::apiserver::request::Query;
use crate::apiserver::resources::ResourceInfo;
use crate::apiserver::status::ApiError;
use crate::apiserver::verbs::{Api, ListOptions};
use crate::store::{CatchUp, EventType, Stored};

/// How often a watch that asked for bookmarks gets one while idle.
const BOOKMARK_PERIOD: Duration = Duration::from_secs(5);

/// Frames buffered per watcher before the writer waits for the client.
const BUFFER: usize = 256;

fn selected(opts: &ListOptions, ns: Option<&str>, s: &Stored) -> bool {
    ns.is_none_or(|n| s.summary.namespace == n)
        && opts
            .labels
            .as_ref()
            .is_none_or(|l| l.matches(&s.summary.labels))
        && opts.fields.as_ref().is_none_or(|f| {
            f.matches(
                &s.summary.name,
                Some(s.summary.namespace.as_str()).filter(|n| !n.is_empty()),
            )
        })
}

/// The events that bring a watcher from its version to `catch_up.rv`, in version order: each
/// changed object once, as it is now (MODIFIED when selected; DELETED when a selector excludes
/// it now, since the watcher may hold it), and each remembered deletion of a selected object.
fn catch_up_events<'a>(
    opts: &ListOptions,
    ns: Option<&str>,
    catch_up: &'a CatchUp,
) -> Vec<(&'static str, &'a Stored)> {
    let mut events: Vec<(&'static str, &'a Stored)> = catch_up
        .changed
        .iter()
        .filter(|s| ns.is_none_or(|n| s.summary.namespace == n))
        .map(|s| {
            let kind = if selected(opts, ns, s) {
                "MODIFIED"
            } else {
                "DELETED"
            };
            (kind, &**s)
        })
        .chain(
            catch_up
                .deleted
                .iter()
                .filter(|t| selected(opts, ns, &t.last))
                .map(|t| ("DELETED", &*t.last)),
        )
        .collect();
    events.sort_by_key(|(_, s)| s.rv);
    events
}

struct Encoder {
    info: Arc<ResourceInfo>,
    render: Render,
    query: Query,
    first_table: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, s: &Stored) -> Bytes {
        let object = match self.render {
            Render::Json => {
                let body = Api::view_bytes(&self.info, s);
                let mut out = Vec::with_capacity(body.len() + 32);
                out.extend_from_slice(b"{\"type\":\"");
                out.extend_from_slice(kind.as_bytes());
                out.extend_from_slice(b"\",\"object\":");
                out.extend_from_slice(&body);
                out.extend_from_slice(b"}\n");
                return Bytes::from(out);
            }
            Render::PartialMetadata => partial(&Api::view(&self.info, s)),
            Render::Table => {
                let meta = json!({"resourceVersion": s.rv.to_string()});
                match build_table(&self.info, &[Api::view(&self.info, s)], &self.query, meta) {
                    Ok(mut t) => {
                        // Like kube-apiserver: column definitions only in the first event.
                        if !self.first_table
                            && let Some(o) = t.as_object_mut()
                        {
                            o.insert("columnDefinitions".into(), json!([]));
                        }
                        self.first_table = false;
                        t
                    }
                    Err(e) => return line("ERROR", &e.to_status()),
                }
            }
        };
        line(kind, &object)
    }

    fn bookmark(&self, rv: u64) -> Bytes {
        line(
            "BOOKMARK",
            &json!({"kind": self.info.kind, "apiVersion": self.info.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()}}),
        )
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut out = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .expect("a serde_json::Value always serializes");
    out.push(b'\n');
    Bytes::from(out)
}

/// Starts a watch and returns the streaming response.
pub fn serve(
    api: Arc<Api>,
    info: Arc<ResourceInfo>,
    ns: Option<String>,
    opts: ListOptions,
    query: &Query,
    render: Render,
) -> Result<Response<Body>, ApiError> {
    let start = match query.get("resourceVersion") {
        None | Some("0") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "resourceVersion {v:?} is not valid: use a version returned by this server, or omit it"
            ))
        })?),
    };
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(t.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("timeoutSeconds must be a whole number, not {t:?}"))
        })?),
        // kube-apiserver picks a random timeout between 30 and 60 minutes.
        None => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let ns = ns.filter(|_| info.namespaced);
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    let mut encoder = Encoder {
        info: info.clone(),
        render,
        query: query.clone(),
        first_table: true,
    };
    tokio::spawn(async move {
        let mut version = api.store.subscribe();
        version.borrow_and_update();
        let mut cursor = match start {
            Some(rv) => rv,
            None => {
                let snapshot = match api.list(
                    &info,
                    ns.as_deref(),
                    &ListOptions {
                        labels: opts.labels.clone(),
                        fields: opts.fields.clone(),
                        ..Default::default()
                    },
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(line("ERROR", &e.to_status())).await;
                        return;
                    }
                };
                for s in &snapshot.items {
                    if tx.send(encoder.event("ADDED", s)).await.is_err() {
                        return;
                    }
                }
                snapshot.rv
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_PERIOD,
            BOOKMARK_PERIOD,
        );
        loop {
            version.borrow_and_update();
            let events = match api.store.events_after(cursor) {
                Ok(e) => e,
                // Fell out of the history (a slow client, a burst of writes): catch up from
                // the current objects rather than make the client relist everything, which
                // only made it fall further behind (decision 65).
                Err(_) => match api.store.changes_since(&info.storage, cursor) {
                    Ok(catch_up) => {
                        for (kind, object) in catch_up_events(&opts, ns.as_deref(), &catch_up) {
                            if tx.send(encoder.event(kind, object)).await.is_err() {
                                return;
                            }
                        }
                        cursor = catch_up.rv;
                        continue;
                    }
                    Err(too_old) => {
                        let status = ApiError::Gone(too_old.to_string()).to_status();
                        let _ = tx.send(line("ERROR", &status)).await;
                        return;
                    }
                },
            };
            for e in events {
                cursor = cursor.max(e.rv);
                if e.key.resource != info.storage {
                    continue;
                }
                let now_in =
                    e.kind != EventType::Deleted && selected(&opts, ns.as_deref(), &e.object);
                let was_in = e
                    .previous
                    .as_ref()
                    .is_some_and(|p| selected(&opts, ns.as_deref(), p));
                let kind = match (e.kind, was_in, now_in) {
                    (EventType::Deleted, true, _) => "DELETED",
                    (EventType::Deleted, false, _) => continue,
                    (_, false, true) => "ADDED",
                    (_, true, true) => "MODIFIED",
                    (_, true, false) => "DELETED",
                    (_, false, false) => continue,
                };
                if tx.send(encoder.event(kind, &e.object)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                changed = version.changed() => {
                    if changed.is_err() { return; }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks {
                        let _ = tx.send(encoder.bookmark(cursor)).await;
                    }
                    return;
                }
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(encoder.bookmark(cursor)).await.is_err() { return; }
                }
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
