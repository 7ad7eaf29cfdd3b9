//! The rate limit service (RLS v3) over a real socket and real Redis.

use super::*;

#[tokio::test]
async fn rls_counts_a_descriptor_until_over_limit_with_remaining_reset_and_headers() {
    let s = server(EDGE).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    for left in [2, 1, 0] {
        let r = ask(
            &mut c,
            "edge",
            vec![desc(&[("remote_address", "10.0.0.1")])],
            0,
        )
        .await;
        assert_eq!(r.overall_code, Code::Ok as i32);
        let st = &r.statuses[0];
        assert_eq!(st.code, Code::Ok as i32);
        assert_eq!(st.limit_remaining, left);
        let limit = st.current_limit.as_ref().unwrap();
        assert_eq!(
            (limit.requests_per_unit, limit.unit),
            (3, Unit::Minute as i32)
        );
        assert_eq!(limit.name, "per-ip");
        let reset = st.duration_until_reset.unwrap();
        assert!(reset.seconds > 0 && reset.seconds <= 60, "{reset:?}");
        assert_eq!(
            header(&r, "x-ratelimit-remaining"),
            Some(left.to_string().as_str())
        );
        assert_eq!(header(&r, "ratelimit-policy"), Some("\"per-ip\";q=3;w=60"));
        assert_eq!(header(&r, "retry-after"), None);
    }
    let r = ask(
        &mut c,
        "edge",
        vec![desc(&[("remote_address", "10.0.0.1")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].limit_remaining, 0);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let text = scrape(&s).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "per-ip"), ("outcome", "allowed")]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "per-ip"), ("outcome", "limited")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_grpc_requests_total",
            &[("method", "ShouldRateLimit"), ("code", "OK")]
        ),
        4.0
    );
}

#[tokio::test]
async fn rls_hits_addend_is_the_cost_and_a_descriptors_own_count_wins() {
    let s = server(&EDGE.replace("3/m", "10/m")).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let ip = [("remote_address", "10.0.0.2")];
    let r = ask(&mut c, "edge", vec![desc(&ip)], 4).await;
    assert_eq!(r.statuses[0].limit_remaining, 6, "hits_addend 4");
    let mut own = desc(&ip);
    own.hits_addend = Some(UInt64Value { value: 5 });
    let r = ask(&mut c, "edge", vec![own], 4).await;
    assert_eq!(
        r.statuses[0].limit_remaining, 1,
        "the descriptor's 5 beats the request's 4"
    );
    let r = ask(&mut c, "edge", vec![desc(&ip)], 2).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32, "2 > 1 left");
    assert_eq!(
        r.statuses[0].limit_remaining, 1,
        "the denial charged nothing"
    );
    let r = ask(&mut c, "edge", vec![desc(&ip)], 0).await;
    assert_eq!(r.overall_code, Code::Ok as i32, "0 means 1");
    assert_eq!(r.statuses[0].limit_remaining, 0);
}

const TWO: &str = r#"
[[rule]]
name = "tight"
domain = "edge"
descriptor = [{ key = "remote_address" }]
limits = ["1/m"]

[[rule]]
name = "loose"
domain = "edge"
descriptor = [{ key = "user" }]
limits = ["10/h"]
"#;

#[tokio::test]
async fn rls_descriptors_in_one_call_are_independent_and_a_denied_one_charges_nothing() {
    let s = server(TWO).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let call = || {
        vec![
            desc(&[("remote_address", "10.0.0.3")]),
            desc(&[("user", "ann")]),
            desc(&[("nobody", "asks")]),
        ]
    };
    let r = ask(&mut c, "edge", call(), 0).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses.len(), 3);
    let r = ask(&mut c, "edge", call(), 0).await;
    assert_eq!(
        r.overall_code,
        Code::OverLimit as i32,
        "any descriptor over: over"
    );
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[1].code, Code::Ok as i32);
    assert_eq!(
        r.statuses[1].limit_remaining, 8,
        "the other descriptor is still charged"
    );
    let l = r.statuses[1].current_limit.as_ref().unwrap();
    assert_eq!((l.requests_per_unit, l.unit), (10, Unit::Hour as i32));
    // An unmatched descriptor: OK, no limit, as Envoy's ratelimit service answers.
    assert_eq!(r.statuses[2].code, Code::Ok as i32);
    assert!(r.statuses[2].current_limit.is_none());
    assert!(r.statuses[2].duration_until_reset.is_none());
    assert_eq!(r.statuses[2].limit_remaining, 0);
    // The denied descriptor was not charged: Redis holds 1 for it, not 2.
    let shown = s
        .admin_client()
        .get(s.admin_url("/v1/limits/tight/10.0.0.3"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shown.contains("\"remaining\":0"), "{shown}");
    // A call with only an unmatched descriptor is OK and carries no headers.
    let r = ask(
        &mut c,
        "other-domain",
        vec![desc(&[("remote_address", "10.0.0.3")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert!(r.response_headers_to_add.is_empty());
}

#[tokio::test]
async fn rls_a_key_without_value_counts_each_value_apart_and_a_value_matches_only_itself() {
    let s = server(
        r#"
[[rule]]
name = "login"
domain = "edge"
descriptor = [{ key = "remote_address" }, { key = "path", value = "/login" }]
limits = ["1/m"]

[[rule]]
name = "paths"
domain = "edge"
descriptor = [{ key = "remote_address" }, { key = "path" }]
limits = ["100/m"]
"#,
    )
    .await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let login = |ip: &str| vec![desc(&[("remote_address", ip), ("path", "/login")])];
    assert_eq!(
        ask(&mut c, "edge", login("10.0.0.4"), 0).await.overall_code,
        Code::Ok as i32
    );
    assert_eq!(
        ask(&mut c, "edge", login("10.0.0.4"), 0).await.overall_code,
        Code::OverLimit as i32
    );
    // Another address has its own counter.
    assert_eq!(
        ask(&mut c, "edge", login("10.0.0.5"), 0).await.overall_code,
        Code::Ok as i32
    );
    // Another path is not "/login": the rule without a value answers it.
    let r = ask(
        &mut c,
        "edge",
        vec![desc(&[("remote_address", "10.0.0.4"), ("path", "/home")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[0].current_limit.as_ref().unwrap().name, "paths");
    assert_eq!(r.statuses[0].limit_remaining, 99);
}

#[tokio::test]
async fn rls_an_override_counts_only_where_the_rule_allows_it_and_never_above_its_cap() {
    let s = server(
        r#"
[[rule]]
name = "tenant"
domain = "edge"
descriptor = [{ key = "tenant" }]
limits = ["2/m"]
allow_override = true
override_max = "5/m"

[[rule]]
name = "fixed"
domain = "edge"
descriptor = [{ key = "user" }]
limits = ["2/m"]
"#,
    )
    .await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let with = |k: &str, v: &str, rpu: u32, unit: RateLimitUnit| {
        let mut d = desc(&[(k, v)]);
        d.limit = Some(RateLimitOverride {
            requests_per_unit: rpu,
            unit: unit as i32,
        });
        vec![d]
    };
    let r = ask(
        &mut c,
        "edge",
        with("tenant", "a", 4, RateLimitUnit::Minute),
        0,
    )
    .await;
    let l = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (l.requests_per_unit, l.unit),
        (4, Unit::Minute as i32),
        "honoured"
    );
    let r = ask(
        &mut c,
        "edge",
        with("tenant", "b", 1000, RateLimitUnit::Second),
        0,
    )
    .await;
    let l = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (l.requests_per_unit, l.unit),
        (5, Unit::Minute as i32),
        "capped at override_max"
    );
    let r = ask(
        &mut c,
        "edge",
        with("user", "c", 1000, RateLimitUnit::Second),
        0,
    )
    .await;
    let l = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (l.requests_per_unit, l.unit),
        (2, Unit::Minute as i32),
        "ignored without allow_override"
    );
    let err = c
        .should_rate_limit(RateLimitRequest {
            domain: "edge".into(),
            descriptors: with("tenant", "d", 3, RateLimitUnit::Unknown),
            hits_addend: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("descriptors[0].limit"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn rls_a_shadow_rule_answers_ok_and_counts_shadow_limited() {
    let s = server(&format!("{}shadow = true\n", EDGE.replace("3/m", "1/m"))).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    for _ in 0..2 {
        let r = ask(
            &mut c,
            "edge",
            vec![desc(&[("remote_address", "10.0.0.6")])],
            0,
        )
        .await;
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.statuses[0].code, Code::Ok as i32);
    }
    let text = scrape(&s).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "per-ip"), ("outcome", "shadow_limited")]
        ),
        1.0
    );
}

#[tokio::test]
async fn rls_repeated_denials_come_from_the_deny_cache() {
    let s = server(&EDGE.replace("3/m", "1/m")).await;
    // The deny cache is used only while this replica hears resets.
    eventually(Duration::from_secs(5), || async {
        metric(&scrape(&s).await, "tollgate_reset_channel_up", &[]) == 1.0
    })
    .await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    for _ in 0..4 {
        ask(
            &mut c,
            "edge",
            vec![desc(&[("remote_address", "10.0.0.7")])],
            0,
        )
        .await;
    }
    let text = scrape(&s).await;
    assert!(
        metric(&text, "tollgate_deny_cache_hits_total", &[]) >= 2.0,
        "{text}"
    );
}

#[tokio::test]
async fn rls_two_replicas_under_concurrency_admit_exactly_the_limit() {
    let redis = shared_redis().url();
    let prefix = unique_prefix("grpc-exact");
    // A generous timeout and on_redis_error = "deny": this measures exactness,
    // and a loaded machine must not turn it into the fallback path.
    let rules = format!(
        "{GRPC}[redis]\ntimeout = \"5s\"\n{}on_redis_error = \"deny\"\n",
        EDGE.replace("3/m", "50/m")
    );
    let a = TestServer::start(&rules, Some(&redis), &prefix).await;
    let b = TestServer::start(&rules, Some(&redis), &prefix).await;
    let channels = [channel(&a).await, channel(&b).await];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut c = RateLimitServiceClient::new(channels[i % 2].clone());
        tasks.push(tokio::spawn(async move {
            ask(
                &mut c,
                "edge",
                vec![desc(&[("remote_address", "10.9.9.9")])],
                0,
            )
            .await
            .overall_code
                == Code::Ok as i32
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap() as u32;
    }
    assert_eq!(admitted, 50);
}

#[tokio::test]
async fn rls_with_redis_down_answers_as_on_redis_error_says() {
    let mut redis = RedisServer::start();
    let rules = format!(
        "{GRPC}[redis]\ntimeout = \"50ms\"\n{}on_redis_error = \"deny\"\n{}on_redis_error = \"allow\"\n",
        r#"
[[rule]]
name = "closed"
domain = "edge"
descriptor = [{ key = "a" }]
limits = ["100/m"]
"#,
        r#"
[[rule]]
name = "open"
domain = "edge"
descriptor = [{ key = "b" }]
limits = ["100/m"]
"#
    );
    let s = TestServer::start(&rules, Some(&redis.url()), &unique_prefix("grpc-down")).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let r = ask(
        &mut c,
        "edge",
        vec![desc(&[("a", "1")]), desc(&[("b", "1")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::Ok as i32, "Redis up");
    redis.kill();
    let r = ask(
        &mut c,
        "edge",
        vec![desc(&[("a", "1")]), desc(&[("b", "1")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32, "deny");
    assert_eq!(r.statuses[1].code, Code::Ok as i32, "allow");
    let text = scrape(&s).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "closed"), ("outcome", "fallback_limited")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "open"), ("outcome", "fallback_allowed")]
        ),
        1.0
    );
}

#[tokio::test]
async fn rls_bad_input_is_invalid_argument_naming_the_field() {
    let s = server(EDGE).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    for (domain, descriptors, field) in [
        ("", vec![desc(&[("a", "b")])], "domain"),
        ("edge", vec![], "descriptors"),
        (
            "edge",
            vec![RateLimitDescriptor {
                is_negative_hits: true,
                ..desc(&[("a", "b")])
            }],
            "descriptors[0].is_negative_hits",
        ),
    ] {
        let err = c
            .should_rate_limit(RateLimitRequest {
                domain: domain.into(),
                descriptors,
                hits_addend: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }
}

#[tokio::test]
async fn rls_headers_are_left_out_when_grpc_ratelimit_headers_is_off() {
    let redis = shared_redis().url();
    let text = format!("{GRPC}grpc_ratelimit_headers = false\n{EDGE}");
    let s = TestServer::start(&text, Some(&redis), &unique_prefix("grpc")).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let r = ask(
        &mut c,
        "edge",
        vec![desc(&[("remote_address", "10.0.0.8")])],
        0,
    )
    .await;
    assert_eq!(r.statuses[0].limit_remaining, 2);
    assert!(r.response_headers_to_add.is_empty());
}

#[tokio::test]
async fn descriptor_rules_never_apply_to_check() {
    let s = server(&EDGE.replace("3/m", "1/m")).await;
    for _ in 0..3 {
        let r = reqwest::get(s.url("/check")).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("ratelimit-policy").is_none());
    }
}

#[tokio::test]
async fn rls_answers_over_limit_with_reason_denied_for_a_denylisted_remote_address_and_charges_nothing(
) {
    let s = server(EDGE).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let r = s
        .admin_client()
        .post(s.admin_url("/v1/denylist"))
        .json(&serde_json::json!({"cidr": "10.9.0.0/16", "ttl": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let asked = || vec![desc(&[("remote_address", "10.9.1.1")])];
    eventually(Duration::from_secs(5), || {
        let mut c = c.clone();
        async move { ask(&mut c, "edge", asked(), 0).await.overall_code == Code::OverLimit as i32 }
    })
    .await;
    for _ in 0..4 {
        let r = ask(&mut c, "edge", asked(), 0).await;
        assert_eq!(r.overall_code, Code::OverLimit as i32);
        assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
        assert_eq!(header(&r, "x-tollgate-reason"), Some("denied"));
        assert!(header(&r, "retry-after").is_some());
    }
    // Nothing was charged: removed, the address has its whole limit (3/m).
    let (code, _) = s
        .admin(reqwest::Method::DELETE, "/v1/denylist/10.9.0.0/16")
        .await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(5), || {
        let mut c = c.clone();
        async move { ask(&mut c, "edge", asked(), 0).await.overall_code == Code::Ok as i32 }
    })
    .await;
    let r = ask(&mut c, "edge", asked(), 0).await;
    assert_eq!(
        r.statuses[0].limit_remaining, 1,
        "the probe above and this one"
    );
    // Another address on the same rule was never denied.
    let r = ask(
        &mut c,
        "edge",
        vec![desc(&[("remote_address", "10.8.0.1")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::Ok as i32);
}

/// A stored override (`PUT /v1/overrides/{rule}/{key}`) and a descriptor's
/// own `limit` (with `allow_override`): the stored override wins, being set
/// by an operator for that exact key; without one the descriptor's limit
/// counts as before. A stored `deny` answers OVER_LIMIT.
#[tokio::test]
async fn rls_a_stored_override_beats_a_descriptors_own_limit_and_without_one_the_descriptor_counts()
{
    let s = server(
        r#"
[[rule]]
name = "tenant"
domain = "edge"
descriptor = [{ key = "tenant" }]
limits = ["2/m"]
allow_override = true
override_max = "5/m"
"#,
    )
    .await;
    let put = |key: &str, body: serde_json::Value| {
        let (client, url) = (
            s.admin_client(),
            s.admin_url(&format!("/v1/overrides/tenant/{key}")),
        );
        async move {
            let r = client.put(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
    };
    put("acme", serde_json::json!({"limits": ["50/m"]})).await;
    put("blocked", serde_json::json!({"limits": "deny"})).await;
    eventually(std::time::Duration::from_secs(5), || async {
        s.app.overrides.table().len() == 2
    })
    .await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let with_limit = |v: &str| {
        let mut d = desc(&[("tenant", v)]);
        d.limit = Some(RateLimitOverride {
            requests_per_unit: 4,
            unit: RateLimitUnit::Minute as i32,
        });
        vec![d]
    };
    // Stored override vs the descriptor's 4/m: the stored 50/m counts.
    let r = ask(&mut c, "edge", with_limit("acme"), 0).await;
    let l = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!((l.requests_per_unit, l.unit), (50, Unit::Minute as i32));
    assert_eq!(r.statuses[0].limit_remaining, 49);
    // Another key: the descriptor's own 4/m.
    let r = ask(&mut c, "edge", with_limit("other"), 0).await;
    let l = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!((l.requests_per_unit, l.unit), (4, Unit::Minute as i32));
    // A stored deny: OVER_LIMIT, with or without a descriptor limit.
    for d in [with_limit("blocked"), vec![desc(&[("tenant", "blocked")])]] {
        let r = ask(&mut c, "edge", d, 0).await;
        assert_eq!(r.overall_code, Code::OverLimit as i32);
    }
}
