//! The allowlist admin API: every bad input a 400 naming the field that
//! changes no key, the embedded store with the same API, readyz waiting for
//! the snapshot.

use super::*;

#[tokio::test]
async fn every_bad_input_is_a_400_naming_the_field_and_changes_no_key() {
    let (prefix, s) = servers(1, "1h").await;
    let s = &s[0];
    assert_eq!(
        add(s, json!({"cidr": "192.0.2.1", "note": "keep"})).await.0,
        201
    );
    let before = dump(&prefix);
    let long_note = "n".repeat(257);
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"cidr": "not-an-ip"}), "cidr", "not an IP"),
        (
            json!({"cidr": "203.0.113.7/24"}),
            "cidr",
            "canonical form is 203.0.113.0/24",
        ),
        (json!({"cidr": "0.0.0.0/0"}), "cidr", "/0"),
        (json!({"cidr": "::/0"}), "cidr", "/0"),
        (json!({"cidr": "10.0.0.0/7"}), "cidr", "min_prefix_v4"),
        (json!({"cidr": "2001:db8::/31"}), "cidr", "min_prefix_v6"),
        (json!({"cidr": "192.0.2.2", "ttl": "31d"}), "ttl", "max_ttl"),
        (
            json!({"cidr": "192.0.2.2", "ttl": "never"}),
            "ttl",
            "allow_permanent",
        ),
        (
            json!({"cidr": "192.0.2.2", "ttl": "soon"}),
            "ttl",
            "bad duration",
        ),
        (json!({"cidr": "192.0.2.2", "ttl": 60}), "ttl", "string"),
        (
            json!({"cidr": "192.0.2.2", "note": long_note}),
            "note",
            "256",
        ),
        (
            json!({"cidr": "192.0.2.2", "colour": "red"}),
            "colour",
            "unknown field",
        ),
        (json!({"ttl": "1h"}), "cidr", "missing"),
        (json!(["192.0.2.2"]), "(body)", "object"),
    ];
    for (body, field, message) in cases {
        let (status, answer) = add(s, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{body} -> {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains(message),
            "{body}: {error:?} lacks {message:?}"
        );
    }
    // A body over 4 KiB: a JSON 413 naming the body.
    let (status, answer) = add(s, json!({"cidr": "192.0.2.2", "note": "n".repeat(5000)})).await;
    assert_eq!(
        (status, answer["field"].as_str(), answer["error"].as_str()),
        (413, Some("(body)"), Some("the body is over 4096 bytes"))
    );
    let r = s
        .admin_client()
        .post(s.admin_url("/v1/allowlist"))
        .header("x-tollgate-actor", "a".repeat(65))
        .body(r#"{"cidr": "192.0.2.3"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["field"],
        "X-Tollgate-Actor"
    );
    for (method, path, field) in [
        (
            reqwest::Method::DELETE,
            "/v1/allowlist/192.0.2.1%2F24",
            "cidr",
        ),
        (reqwest::Method::DELETE, "/v1/allowlist/nope", "cidr"),
        (
            reqwest::Method::GET,
            "/v1/allowlist/check?ip=192.0.2.0/24",
            "ip",
        ),
        (reqwest::Method::GET, "/v1/allowlist/check", "ip"),
        // Query parameters: unknown ones and repeats are named, not ignored.
        (
            reqwest::Method::GET,
            "/v1/allowlist/check?ip=192.0.2.1&verbose=1",
            "verbose",
        ),
        (
            reqwest::Method::GET,
            "/v1/allowlist/check?ip=192.0.2.1&ip=198.51.100.1",
            "ip",
        ),
        (reqwest::Method::GET, "/v1/allowlist?cout=5", "cout"),
        (
            reqwest::Method::GET,
            "/v1/allowlist?count=5&count=500",
            "count",
        ),
        (reqwest::Method::GET, "/v1/allowlist?count=1001", "count"),
        (reqwest::Method::GET, "/v1/allowlist?cursor=-1", "cursor"),
    ] {
        let (status, answer) = admin(s, method, path).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (400, Some(field)),
            "{path}: {answer}"
        );
    }
    // No token: 401, and nothing changes either.
    let anonymous = reqwest::Client::new();
    let r = anonymous
        .post(s.admin_url("/v1/allowlist"))
        .json(&json!({"cidr": "192.0.2.9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for path in ["/v1/allowlist", "/v1/allowlist/check?ip=192.0.2.1"] {
        assert_eq!(
            anonymous
                .get(s.admin_url(path))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    let r = anonymous
        .delete(s.admin_url("/v1/allowlist/192.0.2.1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(dump(&prefix), before, "a refused request changed a key");
    assert_eq!(events(&prefix).len(), 1);
}

#[tokio::test]
async fn the_embedded_store_keeps_an_allowlist_with_the_same_api() {
    let s = TestServer::start(&config("100ms", TRUSTED), None, &unique_prefix("allow")).await;
    assert_eq!(gate(&s, "192.0.2.7").await, 403);
    let (status, body) = add(&s, json!({"cidr": "192.0.2.0/24", "note": "x"})).await;
    assert_eq!((status, body["seq"].as_u64()), (201, Some(1)));
    assert_eq!(
        gate(&s, "192.0.2.7").await,
        200,
        "applied at once in process"
    );
    assert_eq!(
        admin(&s, reqwest::Method::GET, "/v1/allowlist/check?ip=192.0.2.7")
            .await
            .1["cidr"],
        "192.0.2.0/24"
    );
    let (status, body) = admin(&s, reqwest::Method::DELETE, "/v1/allowlist/192.0.2.0/24").await;
    assert_eq!((status, body["seq"].as_u64()), (200, Some(2)));
    assert_eq!(
        admin(&s, reqwest::Method::DELETE, "/v1/allowlist/192.0.2.0/24")
            .await
            .0,
        404
    );
    assert_eq!(gate(&s, "192.0.2.7").await, 403);

    add(&s, json!({"cidr": "192.0.2.7", "ttl": "500ms"})).await;
    assert_eq!(gate(&s, "192.0.2.7").await, 200);
    eventually(Duration::from_secs(3), || async {
        gate(&s, "192.0.2.7").await == 403
    })
    .await;
    // The reaper then drops it, with a seq of its own.
    eventually(Duration::from_secs(3), || async {
        s.app.allowlist.table().seq == 4
    })
    .await;
    let (_, list) = admin(&s, reqwest::Method::GET, "/v1/allowlist").await;
    assert_eq!(list["entries"], json!([]));
}

#[tokio::test]
async fn readyz_waits_for_the_allowlist_snapshot() {
    let cfg = tollgate::config::parse(
        "t.toml",
        "",
        &tollgate::config::Overrides {
            redis_url: Some(format!("redis://127.0.0.1:{}", free_port())),
            ..Default::default()
        },
    )
    .unwrap();
    let app = tollgate::App::new(cfg);
    assert!(!app.allowlist.is_synced());
    let listeners = tollgate::Listeners::bind(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let admin_addr = listeners.admin.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tollgate::run(app, listeners, async move {
        let _ = rx.await;
    }));
    let r = reqwest::get(format!("http://{admin_addr}/readyz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("allowlist"));
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
