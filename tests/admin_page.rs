//! The admin page in a real headless Chromium (chromedriver + fantoccini),
//! against real tollgate servers on one real Redis. Each test saves a
//! screenshot of every state it reaches in its temp dir and prints the paths.
//!
//! `TOLLGATE_README_SCREENSHOT=docs/admin-page.png` makes the first test
//! also write the README's screenshot there.

use fantoccini::Locator;
use redis::Commands;
use serde_json::{json, Value};

use crate::support::allowlist::allow_keys;
use crate::support::{shared_redis, temp_dir, unique_prefix, Browser, TestServer, ADMIN_TOKEN};

/// `login` is limited (members skip it); `admin` is a pure allowlist gate.
const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[allowlist]
reap_interval = "1s"

[[rule]]
name = "login"
match = { path_prefix = "/login" }
limits = ["5/m"]
algorithm = "sliding_window"
allowlist = "bypass"

[[rule]]
name = "admin"
match = { path_prefix = "/admin" }
allowlist = "require"
"#;

const EXPECTED_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

const TOKEN_KEY: &str = "tollgate-admin-token";

/// Open the page at `server`'s admin address and sign in.
async fn sign_in(b: &Browser, server: &TestServer) {
    b.client.goto(&server.admin_url("/")).await.unwrap();
    b.type_into("#token", ADMIN_TOKEN).await;
    b.click("#signin-button").await;
    b.until("the health panel in sync", || async {
        (b.text("#h-freshness").await.as_deref() == Some("in sync")).then_some(())
    })
    .await;
}

/// The peak rate the chart holds for `outcome`.
async fn chart_peak(b: &Browser, outcome: &str) -> f64 {
    b.attr(&format!("#chart polyline.line-{outcome}"), "data-max")
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The remaining TTL the page shows for the entry in `row`, in ms.
async fn remaining_ms(b: &Browser, row: &str) -> Option<u64> {
    b.attr(&format!("{row} td.remaining"), "data-remaining-ms")
        .await
        .and_then(|v| v.parse().ok())
}

/// The status `/check` answers for a request from `ip` (through the trusted
/// loopback proxy) to `path`.
async fn check_status(s: &TestServer, ip: &str, path: &str) -> u16 {
    reqwest::Client::new()
        .get(s.url("/check"))
        .header("x-forwarded-uri", path)
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn api_get(s: &TestServer, path: &str) -> (u16, Value) {
    s.admin(reqwest::Method::GET, path).await
}

#[tokio::test]
async fn the_page_is_admin_only_with_a_strict_csp_refuses_a_wrong_token_and_shows_rules_counters_and_a_moving_chart(
) {
    let dir = temp_dir("admin-page");
    let prefix = unique_prefix("page");
    let s = TestServer::start(CONFIG, Some(&shared_redis().url()), &prefix).await;

    // Served by the admin listener only, every file with the strict CSP.
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = http.get(s.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        assert_eq!(h["content-security-policy"], EXPECTED_CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let r = http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} on the decision listener");
    }

    let b = Browser::start(&dir).await;
    b.client.goto(&s.admin_url("/")).await.unwrap();
    b.until("the sign-in form", || async {
        (b.count("#signin:not([hidden]) #token").await == 1).then_some(())
    })
    .await;
    b.screenshot("01-sign-in").await;
    // The browser enforces the CSP: an inline script put in the page never runs.
    let ran = b
        .js(
            "const s = document.createElement('script');
             s.textContent = 'window.inlineRan = true;';
             document.body.appendChild(s);
             return window.inlineRan === true;",
            vec![],
        )
        .await;
    assert_eq!(ran, json!(false), "an inline script ran despite the CSP");

    // A wrong token: the API's 401 is shown, nothing is kept.
    b.type_into("#token", "not-the-token").await;
    b.click("#signin-button").await;
    let refused = b
        .until("the wrong-token message", || async {
            b.text("#signin-error").await.filter(|t| !t.is_empty())
        })
        .await;
    assert!(refused.contains("Wrong token"), "{refused}");
    assert!(refused.contains("401"), "{refused}");
    assert_eq!(b.count("#app[hidden]").await, 1, "the app stays hidden");
    let kept = b
        .js(
            "return sessionStorage.getItem(arguments[0]);",
            vec![json!(TOKEN_KEY)],
        )
        .await;
    assert_eq!(kept, Value::Null, "a refused token is not kept");
    b.screenshot("02-wrong-token").await;

    // The right one: kept for the tab, never as a cookie.
    b.type_into("#token", ADMIN_TOKEN).await;
    b.click("#signin-button").await;
    b.until("the health panel in sync", || async {
        (b.text("#h-freshness").await.as_deref() == Some("in sync")).then_some(())
    })
    .await;
    let kept = b
        .js(
            "return [sessionStorage.getItem(arguments[0]), document.cookie];",
            vec![json!(TOKEN_KEY)],
        )
        .await;
    assert_eq!(kept, json!([ADMIN_TOKEN, ""]));
    assert_eq!(b.text("#h-redis").await.as_deref(), Some("up"));
    assert_eq!(
        b.text("#h-version").await.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );

    // Each rule with its limits, algorithm, allowlist mode and shadow flag.
    let login = b
        .until("the login rule's row", || async {
            let v = b
                .js(
                    "const r = document.querySelector('#rules-body tr[data-rule=\"login\"]');
                     return r ? [...r.cells].map(c => c.textContent) : null;",
                    vec![],
                )
                .await;
            (!v.is_null()).then_some(v)
        })
        .await;
    assert_eq!(login[0], "login");
    assert_eq!(login[3], "5/m");
    assert_eq!(login[4], "sliding_window");
    assert_eq!(login[5], "bypass");
    assert_eq!(login[7], "no");
    b.screenshot("03-signed-in").await;

    // The chart is flat, then a burst of /check moves it: 5 allowed, 25 limited.
    assert_eq!(chart_peak(&b, "limited").await, 0.0);
    for _ in 0..30 {
        http.get(s.url("/check"))
            .header("x-forwarded-uri", "/login")
            .header("x-forwarded-for", "198.51.100.7")
            .send()
            .await
            .unwrap();
    }
    b.until("the chart's limited line rising", || async {
        (chart_peak(&b, "limited").await > 0.0).then_some(())
    })
    .await;
    assert!(chart_peak(&b, "allowed").await > 0.0);
    b.screenshot("04-chart-after-burst").await;

    // A client's counters: 5 used, then reset through the page.
    b.client
        .find(Locator::Css("#counter-rule"))
        .await
        .unwrap()
        .select_by_value("login")
        .await
        .unwrap();
    b.type_into("#counter-key", "198.51.100.7").await;
    b.click("#counter-show").await;
    let used = b
        .until("the counters of 198.51.100.7", || async {
            b.text("#counter-body tr td:nth-child(2)").await
        })
        .await;
    assert_eq!(used, "5");
    b.screenshot("05-counters").await;
    b.click("#counter-reset").await;
    b.until("the reset message", || async {
        b.text("#counter-message")
            .await
            .filter(|t| t.starts_with("Reset"))
    })
    .await;
    let (status, view) = api_get(&s, "/v1/limits/login/198.51.100.7").await;
    assert_eq!(status, 200);
    assert_eq!(view["limits"][0]["used"], 0, "{view}");

    // The README's picture: a list with entries and the chart after the burst.
    let admin = s.admin_client();
    for (cidr, ttl, note) in [
        ("203.0.113.7", "24h", "login alice"),
        ("198.51.100.0/24", "2h", "office VPN"),
    ] {
        let r = admin
            .post(s.admin_url("/v1/allowlist"))
            .json(&json!({"cidr": cidr, "ttl": ttl, "note": note}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    b.until("both entries listed", || async {
        (b.count("#entries-body tr").await == 2).then_some(())
    })
    .await;
    let readme = std::env::var("TOLLGATE_README_SCREENSHOT").ok();
    if readme.is_some() {
        // For the picture only: a few seconds of mixed traffic, so the chart
        // shows several outcomes (bounded: 20 rounds of 12 requests).
        for round in 0..20u32 {
            for i in 0..12u32 {
                let (uri, ip) = match i % 4 {
                    0 | 1 => ("/login", format!("192.0.2.{}", round / 4)),
                    2 => ("/admin", "192.0.2.200".to_string()),
                    _ => ("/admin", "203.0.113.7".to_string()),
                };
                http.get(s.url("/check"))
                    .header("x-forwarded-uri", uri)
                    .header("x-forwarded-for", ip)
                    .send()
                    .await
                    .unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        b.until("the chart's allowlisted line", || async {
            (chart_peak(&b, "allowlisted").await > 0.0).then_some(())
        })
        .await;
    }
    let shot = b.screenshot("06-overview").await;
    if let Some(to) = readme {
        let to = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(to);
        std::fs::copy(&shot, &to).unwrap();
        println!("README screenshot: {}", to.display());
    }
    b.close().await;
}

#[tokio::test]
async fn an_entry_added_on_one_replicas_page_appears_on_the_others_counts_down_renders_as_text_and_removal_reaches_both(
) {
    let dir = temp_dir("admin-page-replicas");
    let prefix = unique_prefix("page2");
    let redis_url = shared_redis().url();
    let a = TestServer::start(CONFIG, Some(&redis_url), &prefix).await;
    let bsrv = TestServer::start(CONFIG, Some(&redis_url), &prefix).await;

    let b = Browser::start(&dir).await;
    sign_in(&b, &a).await;
    let win_a = b.client.window().await.unwrap();
    let win_b = b.client.new_window(false).await.unwrap().handle;
    b.client.switch_to_window(win_b.clone()).await.unwrap();
    sign_in(&b, &bsrv).await;
    // The fleet table: both replicas, as the registry sees them.
    b.until("both replicas in the fleet table", || async {
        (b.count("#fleet-body tr").await == 2).then_some(())
    })
    .await;
    let summary = b.text("#fleet-summary").await.unwrap_or_default();
    assert!(summary.starts_with("2 live replicas"), "{summary}");

    // Added on A's page with a note that is markup.
    let xss = "<img src=x onerror=alert(1)>";
    b.client.switch_to_window(win_a.clone()).await.unwrap();
    b.type_into("#add-cidr", "203.0.113.0/24").await;
    b.type_into("#add-ttl", "1h").await;
    b.type_into("#add-note", xss).await;
    b.click("#add-button").await;
    let row = r#"#entries-body tr[data-cidr="203.0.113.0/24"]"#;
    b.until("the entry on A's page", || async {
        (b.count(row).await == 1).then_some(())
    })
    .await;
    b.screenshot("01-added-on-a").await;

    // On B's page within a second or two, the note as the very characters.
    b.client.switch_to_window(win_b.clone()).await.unwrap();
    b.until("the entry on B's page", || async {
        (b.count(row).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        b.text(&format!("{row} td.note")).await.as_deref(),
        Some(xss)
    );
    assert_eq!(
        b.text(&format!("{row} td.actor")).await.as_deref(),
        Some("admin-page")
    );
    assert_eq!(b.count("img").await, 0, "the note made no element");
    assert!(b.client.get_alert_text().await.is_err(), "no alert is open");
    b.screenshot("02-seen-on-b-note-as-text").await;

    // The remaining TTL counts down in the page.
    let first = b
        .until("a remaining TTL", || async { remaining_ms(&b, row).await })
        .await;
    assert!(first > 3_500_000 && first <= 3_600_000, "{first}");
    let text_before = b.text(&format!("{row} td.remaining")).await.unwrap();
    b.until("the TTL counting down", || async {
        remaining_ms(&b, row)
            .await
            .filter(|now| *now + 1000 <= first)
            .map(|_| ())
    })
    .await;
    assert_ne!(
        b.text(&format!("{row} td.remaining")).await.unwrap(),
        text_before
    );
    b.screenshot("03-ttl-counting-down").await;

    // Does an address match, and which entry?
    b.type_into("#check-ip", "203.0.113.77").await;
    b.click("#check-form button[type=submit]").await;
    let found = b
        .until("the address check", || async {
            b.text("#check-result").await.filter(|t| !t.is_empty())
        })
        .await;
    assert!(
        found.starts_with("203.0.113.77 matches 203.0.113.0/24"),
        "{found}"
    );
    assert_eq!(b.count(&format!("{row}.match")).await, 1);

    // A bad CIDR on A: the API's own message next to the field; nothing written.
    b.client.switch_to_window(win_a.clone()).await.unwrap();
    let (_, before) = api_get(&a, "/v1/allowlist").await;
    let bad = "198.51.100.7/24";
    b.type_into("#add-cidr", bad).await;
    b.type_into("#add-note", "host bits set").await;
    b.click("#add-button").await;
    let shown = b
        .until("the CIDR's validation message", || async {
            b.text("#add-cidr-error").await.filter(|t| !t.is_empty())
        })
        .await;
    let api = a
        .admin_client()
        .post(a.admin_url("/v1/allowlist"))
        .json(&json!({"cidr": bad, "note": "host bits set"}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 400);
    let api: Value = api.json().await.unwrap();
    assert_eq!(api["field"], "cidr");
    assert_eq!(shown, api["error"].as_str().unwrap());
    assert!(
        shown.contains("198.51.100.0/24"),
        "names the canonical form: {shown}"
    );
    assert_eq!(b.text("#add-ttl-error").await.as_deref(), Some(""));
    let (_, after) = api_get(&a, "/v1/allowlist").await;
    assert_eq!(after["seq"], before["seq"], "nothing was published");
    let entries_key = allow_keys(&prefix).entries;
    let mut redis = shared_redis().conn();
    let held: Vec<String> = redis.hkeys(&entries_key).unwrap();
    assert_eq!(held, vec!["203.0.113.0/24".to_string()]);
    b.screenshot("04-bad-cidr").await;

    // Removed on B's page, with a confirmation: gone from both.
    b.client.switch_to_window(win_b.clone()).await.unwrap();
    b.click(&format!("{row} button.remove")).await;
    b.until("the confirmation", || async {
        (b.count(&format!("{row} button.confirm-remove")).await == 1).then_some(())
    })
    .await;
    assert_eq!(b.count(row).await, 1, "asking removes nothing");
    b.screenshot("05-confirm-remove").await;
    b.click(&format!("{row} button.confirm-remove")).await;
    b.until("the entry gone from B's page", || async {
        (b.count(row).await == 0).then_some(())
    })
    .await;
    b.client.switch_to_window(win_a).await.unwrap();
    b.until("the entry gone from A's page", || async {
        (b.count(row).await == 0).then_some(())
    })
    .await;
    b.screenshot("06-removed-on-both").await;
    let (status, _) = api_get(&a, "/v1/allowlist/check?ip=203.0.113.7").await;
    assert_eq!(status, 404);
    let held: Vec<String> = redis.hkeys(&entries_key).unwrap();
    assert!(held.is_empty(), "{held:?}");

    // A list of several API pages: every entry listed, and a change seen
    // (the pages are read again when seq moves).
    let admin = a.admin_client();
    let add = |i: u32| {
        let admin = admin.clone();
        let url = a.admin_url("/v1/allowlist");
        async move {
            let cidr = format!("10.{}.{}.0/24", i / 256, i % 256);
            let r = admin
                .post(url)
                .json(&json!({"cidr": cidr, "ttl": "1h"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    };
    for chunk in (0..1100u32).collect::<Vec<_>>().chunks(100) {
        futures::future::join_all(chunk.iter().map(|&i| add(i))).await;
    }
    let (_, page) = api_get(&a, "/v1/allowlist?count=1000").await;
    assert!(!page["cursor"].is_null(), "the list is more than one page");
    b.until("1100 entries listed", || async {
        (b.count("#entries-body tr").await == 1100).then_some(())
    })
    .await;
    let r = admin
        .delete(a.admin_url("/v1/allowlist/10.0.7.0%2F24"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    b.until("1099 entries listed", || async {
        (b.count("#entries-body tr").await == 1099).then_some(())
    })
    .await;
    assert_eq!(b.count(r#"tr[data-cidr="10.0.7.0/24"]"#).await, 0);
    b.close().await;
}

/// Redis killed under an idle node: the page shows Redis unreachable (the
/// health PING notices it without traffic), and its banner never blames
/// tollgate, which still answers; both clear once Redis is back.
#[tokio::test]
async fn redis_going_away_shows_as_redis_unreachable_never_as_tollgate_unreachable() {
    let dir = temp_dir("admin-page-redis-down");
    let mut redis = crate::support::RedisServer::start();
    let s = TestServer::start(CONFIG, Some(&redis.url()), &unique_prefix("page3")).await;
    let b = Browser::start(&dir).await;
    sign_in(&b, &s).await;
    b.until("Redis up on the page", || async {
        (b.text("#h-redis").await.as_deref() == Some("up")).then_some(())
    })
    .await;

    redis.kill();
    b.until("Redis unreachable on the page", || async {
        let words = b.text("#h-redis").await?;
        words.starts_with("unreachable").then_some(())
    })
    .await;
    // The list is read from Redis: its poll fails, and the banner says who failed.
    let banner = b
        .until("the banner naming tollgate's answer", || async {
            let text = b.text("#conn-error").await?;
            (!text.is_empty()).then_some(text)
        })
        .await;
    b.screenshot("redis-down").await;
    assert!(
        banner.starts_with("tollgate answered with an error: ") && banner.contains("Redis"),
        "{banner}"
    );

    redis.restart();
    b.until("Redis up again on the page", || async {
        (b.text("#h-redis").await.as_deref() == Some("up")).then_some(())
    })
    .await;
    b.close().await;
}

#[tokio::test]
async fn the_denylist_panel_denies_an_address_names_a_bad_ttl_and_removes_with_a_confirmation() {
    let dir = temp_dir("admin-page-deny");
    let prefix = unique_prefix("page-deny");
    let s = TestServer::start(CONFIG, Some(&shared_redis().url()), &prefix).await;
    let b = Browser::start(&dir).await;
    sign_in(&b, &s).await;

    // A TTL the denylist refuses ("never" needs denylist.allow_permanent):
    // named next to its field, nothing written.
    b.type_into("#deny-add-cidr", "198.51.100.0/24").await;
    b.type_into("#deny-add-ttl", "never").await;
    b.click("#deny-add-button").await;
    let error = b
        .until("the ttl's error", || async {
            b.text("#deny-add-ttl-error")
                .await
                .filter(|t| !t.is_empty())
        })
        .await;
    assert!(error.contains("denylist.allow_permanent"), "{error}");
    let (_, listed) = api_get(&s, "/v1/denylist").await;
    assert_eq!(listed["entries"], json!([]));

    b.type_into("#deny-add-ttl", "1h").await;
    b.click("#deny-add-button").await;
    let row = r#"#deny-entries-body tr[data-cidr="198.51.100.0/24"]"#;
    b.until("the entry in the denylist panel", || async {
        (b.count(row).await == 1).then_some(())
    })
    .await;
    assert_eq!(b.count("#entries-body tr").await, 0, "not on the allowlist");
    assert_eq!(check_status(&s, "198.51.100.9", "/anything").await, 403);
    b.screenshot("01-denied").await;

    b.click(&format!("{row} button.remove")).await;
    b.until("the confirmation", || async {
        (b.count(&format!("{row} button.confirm-remove")).await == 1).then_some(())
    })
    .await;
    b.click(&format!("{row} button.confirm-remove")).await;
    b.until("the entry gone", || async {
        (b.count(row).await == 0).then_some(())
    })
    .await;
    let (status, _) = api_get(&s, "/v1/denylist/check?ip=198.51.100.9").await;
    assert_eq!(status, 404);
    b.screenshot("02-removed").await;
    b.close().await;
}

#[tokio::test]
async fn who_is_hurting_lists_the_most_limited_addresses_and_bans_one_from_its_row() {
    let dir = temp_dir("admin-page-hurting");
    let prefix = unique_prefix("page-hurt");
    let s = TestServer::start(CONFIG, Some(&shared_redis().url()), &prefix).await;
    let login = |ip, path| check_status(&s, ip, path);
    // 5/m: the 6th to 8th logins from .77 are limited, .78's 6th once.
    for i in 0..8 {
        assert_eq!(
            login("203.0.113.77", "/login").await,
            if i < 5 { 200 } else { 429 }
        );
    }
    for i in 0..6 {
        assert_eq!(
            login("203.0.113.78", "/login").await,
            if i < 5 { 200 } else { 429 }
        );
    }
    let b = Browser::start(&dir).await;
    sign_in(&b, &s).await;
    // `login` is the only rule with limits: chosen by itself.
    let row = r#"#hurting-body tr[data-key="203.0.113.77"]"#;
    b.until("203.0.113.77 counted 3 times, first", || async {
        let first = b.attr("#hurting-body tr", "data-key").await;
        let n = b.text(&format!("{row} td.limited")).await;
        (first.as_deref() == Some("203.0.113.77") && n.as_deref() == Some("3")).then_some(())
    })
    .await;
    b.screenshot("01-hurting").await;

    b.type_into("#hurting-ttl", "30m").await;
    b.click(&format!("{row} button.ban")).await;
    b.until("the ban's confirmation", || async {
        (b.count(&format!("{row} button.confirm-ban")).await == 1).then_some(())
    })
    .await;
    // Nothing is denied before the confirmation.
    assert_eq!(login("203.0.113.77", "/anything").await, 200);
    b.click(&format!("{row} button.confirm-ban")).await;
    let message = b
        .until("the ban's message", || async {
            b.text("#hurting-message")
                .await
                .filter(|t| t.starts_with("Denied"))
        })
        .await;
    assert!(message.contains("203.0.113.77/32"), "{message}");
    // Denied on every path, charged nothing; the other address is not.
    assert_eq!(login("203.0.113.77", "/anything").await, 403);
    assert_eq!(login("203.0.113.78", "/anything").await, 200);
    let (status, entry) = api_get(&s, "/v1/denylist/check?ip=203.0.113.77").await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["actor"], "admin-page");
    let note = entry["note"].as_str().unwrap();
    assert!(note.contains("limited 3 times by login"), "{note}");
    let ttl = entry["expires_at"].as_u64().unwrap() - entry["created_at"].as_u64().unwrap();
    assert_eq!(ttl, 30 * 60 * 1000);
    // The denylist panel shows it too.
    b.until("the ban in the denylist panel", || async {
        (b.count(r#"#deny-entries-body tr[data-cidr="203.0.113.77/32"]"#)
            .await
            == 1)
            .then_some(())
    })
    .await;
    b.screenshot("02-banned").await;
    b.close().await;
}

#[tokio::test]
async fn the_overrides_panel_sets_one_names_a_bad_rate_and_removes_it() {
    let dir = temp_dir("admin-page-ovr");
    let prefix = unique_prefix("page-ovr");
    let s = TestServer::start(CONFIG, Some(&shared_redis().url()), &prefix).await;
    let b = Browser::start(&dir).await;
    sign_in(&b, &s).await;

    // A rate that is not one: named next to the limits field, nothing written.
    b.type_into("#ovr-rule", "login").await;
    b.type_into("#ovr-key", "198.51.100.7").await;
    b.type_into("#ovr-limits", "100 a minute").await;
    b.click("#ovr-button").await;
    let error = b
        .until("the limits' error", || async {
            b.text("#ovr-limits-error").await.filter(|t| !t.is_empty())
        })
        .await;
    assert!(error.contains("bad rate"), "{error}");
    let (_, listed) = api_get(&s, "/v1/overrides").await;
    assert_eq!(listed["overrides"], json!([]));

    b.type_into("#ovr-limits", "100/m, 1000/h").await;
    b.click("#ovr-button").await;
    b.until("the override in the panel", || async {
        (b.count("#ovr-entries-body tr").await == 1).then_some(())
    })
    .await;
    let row = b.text("#ovr-entries-body tr").await.unwrap();
    assert!(
        row.contains("198.51.100.7") && row.contains("100/m, 1000/h"),
        "{row}"
    );
    let (code, v) = api_get(&s, "/v1/overrides/login/198.51.100.7").await;
    assert_eq!(
        (code, v["actor"].as_str()),
        (200, Some("admin-page")),
        "{v}"
    );
    b.screenshot("01-override-set").await;

    b.click("#ovr-entries-body tr button.remove").await;
    b.until("the override gone", || async {
        (b.count("#ovr-entries-body tr").await == 0).then_some(())
    })
    .await;
    let (code, _) = api_get(&s, "/v1/overrides/login/198.51.100.7").await;
    assert_eq!(code, 404);
    b.screenshot("02-override-removed").await;
    b.close().await;
}
