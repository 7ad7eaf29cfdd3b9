//! The fleet's snapshot budget (`lua/allow_snapshot_take.lua`): its answers,
//! and nodes resyncing at once that together never page faster than it.

use std::time::Instant;

use tollgate::allowlist::redis_store::RedisAllowlist;
use tollgate::allowlist::snapshot_budget::PageBudget;
use tollgate::keys::KeySpace;
use tollgate::redis_conn::Endpoint;

use super::*;

#[tokio::test]
async fn the_budget_script_grants_a_windows_pages_then_names_the_wait_left_and_grants_again_after_it(
) {
    let redis = RedisServer::start();
    let prefix = unique_prefix("budget_script");
    let keys = KeySpace::new(&prefix).allowlist();
    let store = RedisAllowlist::new(Endpoint::single(redis.url()), keys.clone());
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let budget = PageBudget {
        pages: 3,
        window: Duration::from_millis(400),
    };
    let started = Instant::now();
    for i in 0..3 {
        let got = store.take_snapshot_page(&mut conn, budget).await.unwrap();
        assert_eq!(got, None, "page {i} of the window is granted");
    }
    let wait = store
        .take_snapshot_page(&mut conn, budget)
        .await
        .unwrap()
        .expect("the 4th page of a 3-page window is denied");
    // The window started at the first take: what is left of it, to the ms.
    let elapsed = started.elapsed();
    assert!(wait <= budget.window, "{wait:?}");
    assert!(
        wait + elapsed + Duration::from_millis(1) >= budget.window,
        "{wait:?} left after {elapsed:?} of a {:?} window",
        budget.window
    );
    let again = store
        .take_snapshot_page(&mut conn, budget)
        .await
        .unwrap()
        .expect("still denied");
    assert!(again <= wait);
    let mut sync = redis.conn();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&keys.snapshot_budget)
        .query(&mut sync)
        .unwrap();
    assert!(pttl > 0 && pttl as u128 <= again.as_millis(), "{pttl}");

    // Once the window has run out, a new one grants pages again.
    tokio::time::sleep(again + Duration::from_millis(5)).await;
    assert_eq!(
        store.take_snapshot_page(&mut conn, budget).await.unwrap(),
        None
    );

    // A counter left without expiry (written by hand) denies for one window at most.
    let _: () = redis::cmd("SET")
        .arg(&keys.snapshot_budget)
        .arg(100)
        .query(&mut sync)
        .unwrap();
    let wait = store
        .take_snapshot_page(&mut conn, budget)
        .await
        .unwrap()
        .expect("denied");
    assert_eq!(wait, budget.window);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&keys.snapshot_budget)
        .query(&mut sync)
        .unwrap();
    assert!(pttl > 0 && pttl <= 400, "{pttl}");
}

/// HSCAN calls Redis has served since its stats were reset.
fn hscan_calls(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_hscan:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_resyncing_at_once_together_never_page_faster_than_the_fleet_budget() {
    let _heavy = heavy().await;
    // Its own Redis: every HSCAN it serves is one of these nodes' pages.
    let redis = RedisServer::start();
    let prefix = unique_prefix("budget_storm");
    let mut conn = redis.conn();
    populate(&mut conn, &prefix, 10_000, |_| 0);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();

    // Each node alone would page at 10 000 a second (its whole snapshot in
    // tens of ms); the fleet's budget is 40 a second: 4 pages per 100 ms.
    let fleet = 40;
    let budget = PageBudget::per_second(fleet);
    assert_eq!(budget.pages, 4);
    let started = Instant::now();
    let url = redis.url();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let config = config_with_fleet(10_000, fleet, "0s", "1s");
        nodes.push(TestServer::launch(&config, Some(&url), &prefix).await);
    }
    // A loose bound: about 3 × 60 pages at 40 a second.
    eventually(Duration::from_secs(120), || {
        let ready = nodes.iter().all(|n| n.app.allowlist.is_synced());
        async move { ready }
    })
    .await;
    let elapsed = started.elapsed();
    let pages = hscan_calls(&mut conn);
    let mut waits = 0.0;
    for n in &nodes {
        assert_eq!(n.app.allowlist.table().len(), 10_000);
        waits += metric(
            &scrape(n).await,
            "tollgate_allowlist_snapshot_budget_waits_total",
            &[],
        );
    }
    eprintln!("{pages} pages by 3 nodes in {elapsed:?}, {waits} budget waits");
    assert!(pages >= 3 * 10_000 / 200, "every node paged its snapshot");
    // Windows follow one another, each granting `budget.pages`: `pages` pages
    // span at least this many whole windows, whatever the machine's speed.
    let windows = pages.div_ceil(u64::from(budget.pages)) - 1;
    let least = budget.window * windows as u32;
    assert!(
        elapsed >= least,
        "{pages} pages in {elapsed:?}: faster than the fleet's {fleet} a second (at least {least:?})"
    );
    assert!(waits > 0.0, "the nodes waited for the budget");
}
