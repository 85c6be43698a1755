//! Watch semantics as kube-rs and kube-runtime depend on them: synthetic ADDED events for the
//! current state, resumption from a resourceVersion, the in-band 410 after a restart, bookmarks,
//! `timeoutSeconds`, selector transitions, the refused `sendInitialEvents`, and `watcher()`.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::Appliance;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use siderite::api::{Server, ServerSpec};

/// No test may hang: every body runs under this limit.
const TEST_LIMIT: Duration = Duration::from_secs(90);

async fn within<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("test exceeded its time limit");
}

fn server(name: &str) -> Server {
    Server::new(
        name,
        ServerSpec {
            hostname: Some(name.into()),
            ..Default::default()
        },
    )
}

fn rv<K: Resource>(obj: &K) -> String {
    obj.meta()
        .resource_version
        .clone()
        .expect("every stored object has a resourceVersion")
}

async fn create_all(api: &Api<Server>, names: &[&str]) {
    for name in names {
        api.create(&PostParams::default(), &server(name))
            .await
            .expect("create");
    }
}

type Events = BoxStream<'static, kube::Result<WatchEvent<Server>>>;

async fn watch(api: &Api<Server>, wp: &WatchParams, version: &str) -> Events {
    api.watch(wp, version).await.expect("watch starts").boxed()
}

/// The next event, failing if none arrives within `secs` seconds or the stream ends.
async fn next(events: &mut Events, secs: u64) -> WatchEvent<Server> {
    tokio::time::timeout(Duration::from_secs(secs), events.try_next())
        .await
        .unwrap_or_else(|_| panic!("no watch event within {secs} s"))
        .expect("watch stream error")
        .expect("watch stream ended early")
}

fn describe(e: &WatchEvent<Server>) -> (String, String) {
    match e {
        WatchEvent::Added(s) => ("ADDED".into(), s.name_any()),
        WatchEvent::Modified(s) => ("MODIFIED".into(), s.name_any()),
        WatchEvent::Deleted(s) => ("DELETED".into(), s.name_any()),
        WatchEvent::Bookmark(b) => ("BOOKMARK".into(), b.metadata.resource_version.clone()),
        WatchEvent::Error(s) => ("ERROR".into(), s.code.to_string()),
    }
}

fn pair(kind: &str, name: &str) -> (String, String) {
    (kind.to_string(), name.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_without_a_version_starts_with_synthetic_added_events() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        create_all(&api, &["a", "b", "c"]).await;
        let wp = WatchParams::default().disable_bookmarks().timeout(10);
        // kube-rs sends `resourceVersion=` for "unset" and "0" for "any".
        for version in ["", "0"] {
            let mut events = watch(&api, &wp, version).await;
            let mut names = Vec::new();
            for _ in 0..3 {
                match next(&mut events, 5).await {
                    WatchEvent::Added(s) => names.push(s.name_any()),
                    other => panic!("expected synthetic ADDED, got {:?}", describe(&other)),
                }
            }
            names.sort();
            assert_eq!(names, ["a", "b", "c"], "version {version:?}");
            // Live events follow the snapshot.
            let name = format!("live{}", version.len());
            api.create(&PostParams::default(), &server(&name))
                .await
                .expect("create");
            assert_eq!(describe(&next(&mut events, 5).await), pair("ADDED", &name));
            api.delete(&name, &Default::default())
                .await
                .expect("delete");
            assert_eq!(
                describe(&next(&mut events, 5).await),
                pair("DELETED", &name)
            );
        }

        // With no resourceVersion parameter at all.
        let (code, body) = raw_watch(&appliance, "timeoutSeconds=1").await;
        assert_eq!(code, 200);
        let mut added: Vec<String> = body
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == "ADDED")
            .map(|v| {
                v["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        added.sort();
        assert_eq!(added, ["a", "b", "c"], "body: {body}");
    })
    .await;
}

/// A raw watch on servers with `query`; returns the status and the whole body once it ends.
async fn raw_watch(appliance: &Appliance, query: &str) -> (u16, String) {
    let client = appliance.client().await;
    let req = http::Request::get(format!(
        "/apis/metal.sidero.dev/v1alpha2/servers?watch=true&{query}"
    ))
    .body(Vec::new())
    .expect("request");
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .expect("send");
    let code = resp.status().as_u16();
    use http_body_util::BodyExt;
    let bytes = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the watch body ends")
        .expect("body")
        .to_bytes();
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_version_sees_only_later_events_in_order() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let before = api
            .create(&PostParams::default(), &server("before"))
            .await
            .expect("create");
        let mut events = watch(
            &api,
            &WatchParams::default().disable_bookmarks().timeout(20),
            &rv(&before),
        )
        .await;
        api.create(&PostParams::default(), &server("x"))
            .await
            .expect("create");
        api.patch(
            "x",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostname": "changed"}})),
        )
        .await
        .expect("patch");
        api.delete("x", &Default::default()).await.expect("delete");
        let mut seen = Vec::new();
        let mut rvs = Vec::new();
        for _ in 0..3 {
            let e = next(&mut events, 5).await;
            if let WatchEvent::Added(s) | WatchEvent::Modified(s) | WatchEvent::Deleted(s) = &e {
                rvs.push(rv(s).parse::<u64>().expect("integer rv"));
            }
            seen.push(describe(&e));
        }
        assert_eq!(
            seen,
            [
                pair("ADDED", "x"),
                pair("MODIFIED", "x"),
                pair("DELETED", "x")
            ]
        );
        assert!(rvs.windows(2).all(|w| w[0] < w[1]), "rvs ascend: {rvs:?}");
        assert!(rvs[0] > rv(&before).parse::<u64>().expect("integer"));
        // Nothing about "before", and nothing else.
        let extra = tokio::time::timeout(Duration::from_millis(1500), events.try_next()).await;
        assert!(extra.is_err(), "unexpected event: {extra:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_version_out_of_the_history_catches_up_without_a_410() {
    // A history of 5 events: the 13 changes below push the watch's version out of it.
    let appliance = Appliance::start_with(&["--watch-history", "5"]);
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        create_all(&api, &["a", "b", "c"]).await;
        let since = rv(&api.get("c").await.expect("get"));
        for i in 0..10 {
            api.patch(
                "a",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hostname": format!("a-{i}")}})),
            )
            .await
            .expect("patch");
        }
        api.delete("b", &Default::default()).await.expect("delete");
        api.create(&PostParams::default(), &server("d"))
            .await
            .expect("create");

        let mut events = watch(
            &api,
            &WatchParams::default().disable_bookmarks().timeout(20),
            &since,
        )
        .await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = next(&mut events, 5).await;
            if let WatchEvent::Modified(s) = &e
                && s.name_any() == "a"
            {
                assert_eq!(s.spec.hostname.as_deref(), Some("a-9"), "a as it is now");
            }
            seen.push(describe(&e));
        }
        assert_eq!(
            seen,
            [
                pair("MODIFIED", "a"),
                pair("DELETED", "b"),
                pair("MODIFIED", "d")
            ]
        );
        // And then it is a live watch again.
        api.create(&PostParams::default(), &server("e"))
            .await
            .expect("create");
        assert_eq!(describe(&next(&mut events, 5).await), pair("ADDED", "e"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_before_a_restart_gets_an_in_band_410() {
    let mut appliance = Appliance::start();
    let api: Api<Server> = Api::all(appliance.client().await);
    let old = api
        .create(&PostParams::default(), &server("a"))
        .await
        .expect("create");
    api.create(&PostParams::default(), &server("b"))
        .await
        .expect("create");
    appliance.kill9();
    appliance.spawn();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let mut events = watch(
            &api,
            &WatchParams::default().disable_bookmarks().timeout(10),
            &rv(&old),
        )
        .await;
        match next(&mut events, 5).await {
            WatchEvent::Error(status) => {
                assert_eq!(status.code, 410, "{status:?}");
                assert_eq!(status.reason, "Expired", "{status:?}");
            }
            other => panic!("expected ERROR 410, got {:?}", describe(&other)),
        }

        let (code, body) = raw_watch(&appliance, &format!("resourceVersion={}", rv(&old))).await;
        assert_eq!(code, 200, "the 410 is in band, not the HTTP status");
        let first: serde_json::Value =
            serde_json::from_str(body.lines().next().unwrap_or("")).expect("one JSON event");
        assert_eq!(first["type"], "ERROR");
        assert_eq!(first["object"]["kind"], "Status");
        assert_eq!(first["object"]["code"], 410);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watch_gets_bookmarks_with_api_version_and_kind() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let s = api
            .create(&PostParams::default(), &server("a"))
            .await
            .expect("create");
        let started = Instant::now();
        let mut events = watch(&api, &WatchParams::default().timeout(30), &rv(&s)).await;
        match next(&mut events, 8).await {
            WatchEvent::Bookmark(b) => {
                assert_eq!(b.types.api_version, "metal.sidero.dev/v1alpha2");
                assert_eq!(b.types.kind, "Server");
                let bookmark_rv: u64 = b.metadata.resource_version.parse().expect("integer");
                assert!(bookmark_rv >= rv(&s).parse::<u64>().expect("integer"));
            }
            other => panic!("expected BOOKMARK, got {:?}", describe(&other)),
        }
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "the idle bookmark came after a period, not at once: {:?}",
            started.elapsed()
        );

        // A bookmark also closes a watch whose timeout ran out.
        let started = Instant::now();
        let mut events = watch(&api, &WatchParams::default().timeout(2), &rv(&s)).await;
        match next(&mut events, 4).await {
            WatchEvent::Bookmark(b) => assert_eq!(b.types.kind, "Server"),
            other => panic!("expected BOOKMARK at timeout, got {:?}", describe(&other)),
        }
        let end = tokio::time::timeout(Duration::from_secs(3), events.try_next())
            .await
            .expect("the stream ends after the timeout bookmark")
            .expect("no stream error");
        assert!(end.is_none(), "stream ended");
        assert!(started.elapsed() < Duration::from_secs(4));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_seconds_ends_the_stream() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let started = Instant::now();
        let mut events = watch(
            &api,
            &WatchParams::default().disable_bookmarks().timeout(2),
            "",
        )
        .await;
        let end = tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .expect("the stream ends")
            .expect("no stream error");
        assert!(end.is_none(), "no events, just the end");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1500) && took <= Duration::from_secs(3),
            "ended after {took:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selector_transitions_are_added_and_deleted() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let list = api.list(&ListParams::default()).await.expect("list");
        let start = list.metadata.resource_version.expect("list rv");
        let mut events = watch(
            &api,
            &WatchParams::default()
                .disable_bookmarks()
                .labels("tier=gold")
                .timeout(20),
            &start,
        )
        .await;
        let label = |tier: &str| Patch::Merge(json!({"metadata": {"labels": {"tier": tier}}}));
        let pp = PatchParams::default();
        api.create(&PostParams::default(), &server("m"))
            .await
            .expect("create unlabelled");
        api.patch("m", &pp, &label("gold"))
            .await
            .expect("into selection");
        api.patch(
            "m",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"other": "x"}}})),
        )
        .await
        .expect("change within selection");
        api.patch("m", &pp, &label("silver"))
            .await
            .expect("out of selection");
        api.patch(
            "m",
            &pp,
            &Patch::Merge(json!({"spec": {"hostname": "unseen"}})),
        )
        .await
        .expect("change outside selection");
        api.delete("m", &Default::default())
            .await
            .expect("delete outside");
        let mut sentinel = server("sentinel");
        sentinel.metadata.labels = Some([("tier".to_string(), "gold".to_string())].into());
        api.create(&PostParams::default(), &sentinel)
            .await
            .expect("sentinel");

        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(describe(&next(&mut events, 5).await));
        }
        assert_eq!(
            seen,
            [
                pair("ADDED", "m"),
                pair("MODIFIED", "m"),
                pair("DELETED", "m"),
                pair("ADDED", "sentinel"),
            ]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_initial_events_is_refused_with_422() {
    let appliance = Appliance::start();
    within(async {
        let (code, status) = appliance
            .raw(
                "GET",
                "/apis/metal.sidero.dev/v1alpha2/servers?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
                None,
                vec![],
            )
            .await;
        assert_eq!(code, 422, "{status}");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "Invalid");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_watcher_sees_creates_updates_and_deletes() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        api.create(&PostParams::default(), &server("existing"))
            .await
            .expect("create");
        let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
        let mut next_event = async || {
            tokio::time::timeout(Duration::from_secs(10), stream.try_next())
                .await
                .expect("a watcher event within 10 s")
                .expect("watcher error")
                .expect("watcher stream ended")
        };
        // The initial list.
        let mut initial = Vec::new();
        loop {
            match next_event().await {
                watcher::Event::Init => {}
                watcher::Event::InitApply(s) => initial.push(s.name_any()),
                watcher::Event::InitDone => break,
                other => panic!("unexpected during init: {other:?}"),
            }
        }
        assert_eq!(initial, ["existing"]);

        api.create(&PostParams::default(), &server("new"))
            .await
            .expect("create");
        match next_event().await {
            watcher::Event::Apply(s) => assert_eq!(s.name_any(), "new"),
            other => panic!("expected Apply(new), got {other:?}"),
        }
        api.patch(
            "new",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostname": "renamed"}})),
        )
        .await
        .expect("patch");
        match next_event().await {
            watcher::Event::Apply(s) => {
                assert_eq!(s.name_any(), "new");
                assert_eq!(s.spec.hostname.as_deref(), Some("renamed"));
            }
            other => panic!("expected Apply(new, renamed), got {other:?}"),
        }
        api.delete("new", &Default::default())
            .await
            .expect("delete");
        match next_event().await {
            watcher::Event::Delete(s) => assert_eq!(s.name_any(), "new"),
            other => panic!("expected Delete(new), got {other:?}"),
        }
    })
    .await;
}
