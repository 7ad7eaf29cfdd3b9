//! Property tests: no input panics a parser or a handler. Arbitrary rate
//! strings, CIDRs, `X-Forwarded-For` chains, key parts and request bodies
//! (`POST /v1/check`, the allowlist admin API, forward-auth headers) give an
//! answer or a 4xx, never a panic or a 5xx.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Request};
use proptest::prelude::*;
use tollgate::allowlist::{cidr, input};
use tollgate::client_ip::{canonical, ClientIpResolver};
use tollgate::config::{self, Overrides};
use tollgate::keys::{bounded_part, MAX_KEY_PART_BYTES};
use tollgate::rate::Rate;
use tollgate::request::RequestView;
use tollgate::rule::KeyTemplate;
use tollgate::App;
use tower_service::Service;

// === parsers ===

proptest! {
    #[test]
    fn any_rate_text_parses_or_errs_and_valid_rates_round_trip(
        text in ".{0,40}",
        limit in 1u64..=u64::MAX,
        unit in prop::sample::select(vec!["s", "m", "h", "d", "250ms", "30s", "2h", "7d"]),
    ) {
        let _ = text.parse::<Rate>();
        let rate: Rate = format!("{limit}/{unit}").parse().unwrap();
        prop_assert_eq!(rate.to_string().parse::<Rate>().unwrap(), rate);
    }

    #[test]
    fn any_cidr_text_is_refused_or_canonical(text in "[0-9a-fA-F:./ %\\[\\]]{0,48}|.{0,48}") {
        let defaults = config::defaults(&Overrides::default()).unwrap().allowlist;
        let floor = cidr::PrefixFloor { v4: 8, v6: 32 };
        if let Ok(net) = cidr::parse_net(&text) {
            prop_assert_eq!(net.trunc(), net);
            prop_assert_eq!(cidr::parse_net(&net.to_string()), Ok(net), "canonical is a fixed point");
        }
        let _ = cidr::parse_entry(&text, floor);
        let _ = cidr::parse_ip(&text);
        let _ = input::new_entry(&text, Some(&text), Some(&text), "p".into(), &defaults);
        let _ = input::parse_ttl(&text, &defaults);
        let _ = input::actor(&text);
    }

    #[test]
    fn generated_networks_parse_to_their_canonical_form(ip in any::<IpAddr>(), len in 0u8..=128) {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let net = ipnet::IpNet::new(ip, len.min(max)).unwrap().trunc();
        let parsed = cidr::parse_net(&net.to_string()).unwrap();
        prop_assert!(parsed.contains(&canonical(net.network())));
    }

    #[test]
    fn any_forwarded_chain_resolves_to_the_peer_or_an_address_written_in_it(
        hops in prop::collection::vec(
            prop_oneof![
                any::<IpAddr>().prop_map(|ip| ip.to_string()),
                any::<SocketAddr>().prop_map(|a| a.to_string()),
                Just("127.0.0.1".to_string()),
                "[ -~]{0,20}",
            ],
            0..8,
        ),
        real_ip in prop::option::of("[ -~]{0,40}"),
        peer_trusted in any::<bool>(),
        peer in any::<IpAddr>(),
    ) {
        let resolver = ClientIpResolver::new(vec!["127.0.0.0/8".parse().unwrap()], 64);
        let peer = if peer_trusted { "127.0.0.1".parse().unwrap() } else { peer };
        let mut headers = HeaderMap::new();
        let chain = hops.join(", ");
        if let Ok(v) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", v);
        }
        if let Some(v) = real_ip.as_deref().and_then(|r| HeaderValue::from_str(r).ok()) {
            headers.insert("x-real-ip", v);
        }
        let got = resolver.resolve(peer, &headers);
        let written = chain
            .split(',')
            .chain(real_ip.as_deref())
            .filter_map(|h| {
                let h = h.trim();
                h.parse::<IpAddr>().ok().or_else(|| h.parse::<SocketAddr>().ok().map(|s| s.ip()))
            })
            .map(canonical)
            .collect::<Vec<_>>();
        if !resolver_trusts_loopback(peer) {
            prop_assert_eq!(got, canonical(peer), "an untrusted peer's headers are never believed");
        } else {
            prop_assert!(got == canonical(peer) || written.contains(&got), "{got} from {chain:?}");
        }
        let _ = resolver.key_ip(got);
    }

    #[test]
    fn keys_are_bounded_deterministic_and_keep_distinct_parts_distinct(
        a in ".{0,300}",
        b in ".{0,300}",
        path in "/[ -~]{0,400}",
        query in "[ -~]{0,400}",
        host in "[a-z0-9.:-]{0,300}",
        header in "[ -~]{0,400}",
    ) {
        for v in [&a, &b] {
            let p = bounded_part(v);
            prop_assert!(p.len() <= MAX_KEY_PART_BYTES, "{} bytes", p.len());
        }
        if a != b {
            prop_assert_ne!(bounded_part(&a), bounded_part(&b));
        }
        let template = KeyTemplate::parse("ip+header:x-user+query:q+path+host+method").unwrap();
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&header) {
            headers.insert("x-user", v);
        }
        let q = format!("q={query}");
        let req = RequestView {
            method: "POST",
            path: &path,
            path_others: &[],
            query: Some(&q),
            host: Some(&host),
            headers: &headers,
            client_ip: Some("203.0.113.7".parse().unwrap()),
            client_key_ip: Some("203.0.113.7".parse().unwrap()),
        };
        if let Some(key) = template.build(&req) {
            prop_assert!(key.len() <= 6 * MAX_KEY_PART_BYTES + 5, "{} bytes", key.len());
            prop_assert_eq!(template.build(&req), Some(key));
        }
    }
}

fn resolver_trusts_loopback(peer: IpAddr) -> bool {
    canonical(peer).is_loopback() && canonical(peer).is_ipv4()
}

// === handlers ===

/// One embedded-store app (no Redis) and a runtime to drive its routers.
fn harness() -> &'static (tokio::runtime::Runtime, Arc<App>) {
    static H: OnceLock<(tokio::runtime::Runtime, Arc<App>)> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cfg = config::parse(
            "props.toml",
            r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login"
match = { path_prefix = "/login" }
key = "ip+header:x-user"
limits = ["5/m"]
algorithm = "sliding_log"

[[rule]]
name = "gate"
match = { path_prefix = "/admin" }
allowlist = "require"
"#,
            &Overrides::default(),
        )
        .unwrap();
        let app = rt.block_on(async { App::new(cfg) });
        (rt, app)
    })
}

/// The status of one request through the decision or admin router.
fn status(admin: bool, req: Request<Body>) -> u16 {
    let (rt, app) = harness();
    let mut req = req;
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    rt.block_on(async {
        let mut router = if admin {
            tollgate::http::admin_router(app.clone())
        } else {
            tollgate::http::decision_router(app.clone())
        };
        router.call(req).await.unwrap().status().as_u16()
    })
}

fn post(admin: bool, uri: &str, body: Vec<u8>) -> u16 {
    let req = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    status(admin, req)
}

/// JSON values of every type, numbers at their edges included.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
        prop::sample::select(vec![
            "1/s",
            "100000000/d",
            "5/m",
            "0/h",
            "1/0s",
            "3/7d",
            "login",
            "gate",
            "sliding_log",
            "gcra",
            "never",
            "24h",
            "203.0.113.0/24",
            "::/0"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            Just(json!({})),
        ]
    })
}

fn json_object(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((prop::sample::select(fields), json_value()), 0..6).prop_map(|kv| {
        let map: serde_json::Map<String, serde_json::Value> =
            kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        serde_json::to_vec(&map).unwrap()
    })
}

fn client_error_or_success(s: u16) -> bool {
    (200..300).contains(&s) || (400..500).contains(&s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn v1_check_answers_any_body_with_2xx_or_4xx(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        object in json_object(&["key", "rule", "limits", "algorithm", "cost", "burst", "extra"]),
    ) {
        for body in [bytes, object] {
            let s = post(false, "/v1/check", body.clone());
            prop_assert!(client_error_or_success(s), "{s} for {}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn the_allowlist_api_answers_any_input_with_2xx_or_4xx(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        object in json_object(&["cidr", "ttl", "note", "extra"]),
        text in "[ -~]{0,48}",
    ) {
        for body in [bytes, object] {
            let s = post(true, "/v1/allowlist", body.clone());
            prop_assert!(client_error_or_success(s), "{s} for {}", String::from_utf8_lossy(&body));
        }
        let enc: String = form_urlencoded::byte_serialize(text.as_bytes()).collect();
        let s = status(true, Request::get(format!("/v1/allowlist/check?ip={enc}")).body(Body::empty()).unwrap());
        prop_assert!(client_error_or_success(s), "{s} for check {text:?}");
        let s = status(true, Request::delete(format!("/v1/allowlist/{enc}")).body(Body::empty()).unwrap());
        prop_assert!(client_error_or_success(s), "{s} for delete {text:?}");
    }

    #[test]
    fn forward_auth_answers_any_headers_with_2xx_or_4xx(
        uri in "[ -~]{0,200}",
        method in "[ -~]{0,12}",
        xff in "[ -~]{0,80}",
        host in "[ -~]{0,80}",
        user in "[ -~]{0,300}",
    ) {
        let mut req = Request::get("/check");
        for (name, value) in [
            ("x-original-uri", &uri),
            ("x-original-method", &method),
            ("x-forwarded-uri", &uri),
            ("x-forwarded-method", &method),
            ("x-forwarded-for", &xff),
            ("x-forwarded-host", &host),
            ("x-user", &user),
        ] {
            if HeaderValue::from_str(value).is_ok() {
                req = req.header(name, value.as_str());
            }
        }
        let s = status(false, req.body(Body::empty()).unwrap());
        prop_assert!(client_error_or_success(s), "{s}");
    }
}
