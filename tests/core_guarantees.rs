//! The guarantees the decision core owns for every surface: the `[api]` caps
//! on a charge (JSON `cost`, RLS `hits_addend`), refused before anything is
//! written; and a request's rules charged all or nothing.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::google::protobuf::UInt64Value;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::support::{
    metric, scrape, shared_cluster, shared_redis, unique_prefix, TestServer, BOTH_STORES,
};

/// The costliest rules there are: a sliding_log adds one member per unit.
const CAPPED: &str = r#"
[server]
grpc_listen = "127.0.0.1:0"

[[rule]]
name = "log"
match = { path_prefix = "/log" }
algorithm = "sliding_log"
limits = ["1000000/h"]

[[rule]]
name = "fw"
match = { path_prefix = "/fw" }
limits = ["1000000/h"]

[[rule]]
name = "log-rls"
domain = "edge"
descriptor = [{ key = "user" }]
algorithm = "sliding_log"
limits = ["1000000/h"]

[[rule]]
name = "fw-rls"
domain = "edge"
descriptor = [{ key = "team" }]
limits = ["1000000/h"]
"#;

/// `api.max_cost` and `api.max_log_limit` by default.
const MAX_COST: u64 = 1000;
const MAX_LOG: u64 = 25;

async fn post(s: &TestServer, body: &Value) -> (u16, Value) {
    s.post_check(body).await
}

async fn rls(s: &TestServer) -> RateLimitServiceClient<Channel> {
    let addr = s.grpc_addr.expect("grpc_listen set");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    RateLimitServiceClient::new(channel)
}

/// One descriptor `key=value`, with its own hits_addend when given.
fn desc(key: &str, value: &str, own: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: vec![Entry {
            key: key.into(),
            value: value.into(),
        }],
        hits_addend: own.map(|value| UInt64Value { value }),
        ..Default::default()
    }
}

async fn ask(
    c: &mut RateLimitServiceClient<Channel>,
    descriptors: Vec<RateLimitDescriptor>,
    hits_addend: u32,
) -> Result<(), tonic::Status> {
    c.should_rate_limit(RateLimitRequest {
        domain: "edge".into(),
        descriptors,
        hits_addend,
    })
    .await
    .map(|_| ())
}

/// Units held in Redis under `prefix`: members of sliding logs plus fixed
/// window counts (what the calls wrote).
fn units(prefix: &str) -> u64 {
    let mut conn = shared_redis().conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:rl:*"))
        .query(&mut conn)
        .unwrap();
    keys.iter()
        .map(|k| {
            if k.contains(":sl:") {
                redis::cmd("ZCARD").arg(k).query::<u64>(&mut conn).unwrap()
            } else {
                redis::cmd("GET").arg(k).query::<u64>(&mut conn).unwrap()
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_past_the_caps_is_refused_on_every_surface_and_writes_nothing() {
    let prefix = unique_prefix("caps-core");
    let s = TestServer::start(CAPPED, Some(&shared_redis().url()), &prefix).await;
    let mut c = rls(&s).await;

    // JSON: the reported 546 ms call, then one unit past max_log_limit.
    for cost in [200_000, MAX_LOG + 1] {
        let (status, answer) = post(&s, &json!({"rule": "log", "key": "u1", "cost": cost})).await;
        assert_eq!(
            (status, &answer["field"]),
            (400, &json!("cost")),
            "{answer}"
        );
    }
    // RLS: the request's hits_addend, a descriptor's own, and a refused
    // descriptor beside an acceptable one (which is not charged either).
    let e = ask(&mut c, vec![desc("user", "u2", None)], 200_000)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("hits_addend: "), "{}", e.message());
    let e = ask(
        &mut c,
        vec![
            desc("team", "t1", None),
            desc("user", "u3", Some(MAX_LOG + 1)),
        ],
        1,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("descriptors[1].hits_addend: a sliding_log cost may not exceed 25"),
        "{}",
        e.message()
    );
    assert_eq!(units(&prefix), 0, "a refused charge wrote something");

    // The largest accepted call adds exactly its cap's members, in one call.
    let (status, answer) = post(&s, &json!({"rule": "log", "key": "u1", "cost": MAX_LOG})).await;
    assert_eq!(
        (status, &answer["allowed"]),
        (200, &json!(true)),
        "{answer}"
    );
    assert_eq!(units(&prefix), MAX_LOG);
    ask(&mut c, vec![desc("user", "u2", None)], MAX_LOG as u32)
        .await
        .unwrap();
    assert_eq!(units(&prefix), 2 * MAX_LOG);

    let text = scrape(&s).await;
    let refused = |reason| {
        metric(
            &text,
            "tollgate_refused_requests_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(refused("cost_over_cap"), 2.0);
    assert_eq!(refused("cost_over_log_cap"), 2.0);
}

#[tokio::test]
async fn the_embedded_store_meets_the_same_caps() {
    let s = TestServer::start(CAPPED, None, &unique_prefix("caps-embedded")).await;
    let (status, answer) = post(
        &s,
        &json!({"rule": "log", "key": "u1", "cost": MAX_LOG + 1}),
    )
    .await;
    assert_eq!(
        (status, &answer["field"]),
        (400, &json!("cost")),
        "{answer}"
    );
    let (status, answer) = post(&s, &json!({"rule": "log", "key": "u1", "cost": MAX_LOG})).await;
    assert_eq!(
        (status, &answer["limits"][0]["remaining"]),
        (200, &json!(1_000_000 - MAX_LOG))
    );
    let mut c = rls(&s).await;
    let e = ask(&mut c, vec![desc("user", "u1", Some(MAX_COST + 1))], 1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

/// Random (surface, rule, cost) triples through the core: every accepted
/// charge is within the caps and wrote exactly its cost; every refused one
/// wrote nothing. Seeded: a failure names the seed and the triple.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_surface_rule_cost_triples_are_accepted_only_within_the_caps() {
    let prefix = unique_prefix("caps-prop");
    let s = TestServer::start(CAPPED, Some(&shared_redis().url()), &prefix).await;
    let mut c = rls(&s).await;
    let seed = rand::random::<u64>();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let edges = [
        0,
        1,
        MAX_LOG,
        MAX_LOG + 1,
        MAX_COST,
        MAX_COST + 1,
        200_000,
        u32::MAX as u64,
    ];
    for i in 0..60 {
        let cost = match rng.random_bool(0.5) {
            true => edges[rng.random_range(0..edges.len())],
            false => rng.random_range(1..2 * MAX_COST),
        };
        let log = rng.random_bool(0.5);
        let json = rng.random_bool(0.5);
        let before = units(&prefix);
        let accepted = if json {
            let rule = if log { "log" } else { "fw" };
            let (status, _) = post(
                &s,
                &json!({"rule": rule, "key": format!("k{i}"), "cost": cost}),
            )
            .await;
            status == 200
        } else {
            let key = if log { "user" } else { "team" };
            ask(&mut c, vec![desc(key, &format!("k{i}"), Some(cost))], 1)
                .await
                .is_ok()
        };
        let wrote = units(&prefix) - before;
        // RLS reads a hits_addend of 0 as 1 (Envoy's default).
        let charged = if json { cost } else { cost.max(1) };
        let within = (1..=MAX_COST).contains(&charged) && (!log || charged <= MAX_LOG);
        let triple = format!("seed {seed}, #{i}: json={json} log={log} cost={cost}");
        assert_eq!(accepted, within, "{triple}");
        assert_eq!(wrote, if accepted { charged } else { 0 }, "{triple}");
    }
}

const TWO_RULES: &str = r#"
[[rule]]
name = "per-second"
limits = ["5/s"]

[[rule]]
name = "per-minute"
limits = ["50/m"]
"#;

/// The per-minute counter as the admin API shows it (either store).
async fn used(s: &TestServer, rule: &str) -> u64 {
    let (status, view) = s
        .admin(
            reqwest::Method::GET,
            &format!("/v1/limits/{rule}/127.0.0.1"),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    view["limits"][0]["used"].as_u64().unwrap()
}

/// Hammer `/check` for about 2.5 s (across at least two 1 s windows) from 4
/// concurrent clients; bounded in time and count. The number admitted.
async fn hammer(s: &TestServer) -> u64 {
    let until = Instant::now() + Duration::from_millis(2500);
    let client = reqwest::Client::new();
    let tasks = (0..4).map(|_| {
        let (client, url) = (client.clone(), s.url("/check"));
        tokio::spawn(async move {
            let (mut admitted, mut sent) = (0u64, 0);
            while Instant::now() < until && sent < 400 {
                sent += 1;
                let status = client.get(&url).send().await.unwrap().status().as_u16();
                assert!(status == 200 || status == 429, "{status}");
                admitted += u64::from(status == 200);
            }
            admitted
        })
    });
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_one_rule_denies_spends_nothing_of_another_under_sustained_load() {
    for kind in BOTH_STORES {
        let s = TestServer::start(
            TWO_RULES,
            kind.redis_url().as_deref(),
            &unique_prefix("aon"),
        )
        .await;
        let admitted = hammer(&s).await;
        // 5/s over 2.5 s: 10 to 15 admitted, and hundreds denied by per-second.
        assert!((5..=20).contains(&admitted), "{kind:?}: {admitted}");
        // Every admitted request charged both rules; no denied one charged per-minute.
        assert_eq!(used(&s, "per-minute").await, admitted, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_cluster_a_denied_request_spends_nothing_of_another_rule_when_requests_do_not_race() {
    // The Cluster's guarantee (README): rules in different slots are peeked,
    // then charged; with no request racing between the two, a request one
    // rule denies spends nothing of the other.
    let cluster = shared_cluster();
    let config = format!("{}{TWO_RULES}", cluster.config_section("2s"));
    let s = TestServer::start(&config, None, &unique_prefix("aon-cluster")).await;
    let mut admitted = 0;
    for _ in 0..30 {
        admitted += u64::from(s.check_with("x-none", "-").await == 200);
    }
    assert!((5..=15).contains(&admitted), "{admitted}");
    assert_eq!(used(&s, "per-minute").await, admitted);
}
