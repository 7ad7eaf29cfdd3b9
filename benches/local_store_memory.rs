//! Process memory per client in the embedded store (also the fallback while
//! Redis is away), measured as RSS growth over 1 000 000 distinct clients of a
//! `100/h` limit, one request each; for sliding_log also per further stored
//! entry (10 more on each of 100 000 clients). One algorithm per process, so
//! one run's freed pages cannot hide another's growth.
//! Run: `cargo bench --bench local_store_memory` (Linux: reads /proc/self/status).

use tollgate::limiter::{Algorithm, Call, LocalStore};
use tollgate::rate::Rate;

const CLIENTS: u64 = 1_000_000;

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The key base the server builds for a per-address rule.
fn base(i: u64, tag: &str) -> String {
    format!(
        "tg:rl:{{per_ip|10.{}.{}.{}}}:{tag}",
        i >> 16,
        (i >> 8) & 255,
        i & 255
    )
}

fn measure(algorithm: Algorithm, tag: &str) {
    let limits = [Rate {
        limit: 100,
        period_ms: 3_600_000,
    }];
    let store = LocalStore::new(usize::MAX, Default::default());
    let hit = |i: u64| {
        let key = base(i, tag);
        let call = Call {
            algorithm,
            base: &key,
            limits: &limits,
            cost: 1,
            burst: None,
            charge: true,
        };
        assert!(
            store.check(call).allowed,
            "client {i} refused: the run measures admissions"
        );
    };
    // Warm up the allocator and the map's shards on other clients.
    (CLIENTS..CLIENTS + 1000).for_each(hit);
    let before = rss_kb();
    (0..CLIENTS).for_each(hit);
    let after = rss_kb();
    print!(
        "{tag}: {:.1} B per client over {CLIENTS} clients",
        (after - before) as f64 * 1024.0 / CLIENTS as f64
    );
    if algorithm == Algorithm::SlidingLog {
        let extra = CLIENTS / 10;
        for _ in 0..10 {
            (0..extra).for_each(hit);
        }
        let grown = rss_kb();
        print!(
            "; {:.1} B per further stored entry over {} entries",
            (grown - after) as f64 * 1024.0 / (extra * 10) as f64,
            extra * 10
        );
    }
    println!();
}

fn main() {
    let algorithms = [
        (Algorithm::FixedWindow, "fixed_window"),
        (Algorithm::Gcra, "gcra"),
        (Algorithm::SlidingLog, "sliding_log"),
    ];
    // The parent runs each algorithm in a child process of its own.
    if let Some(tag) = std::env::args().nth(1).filter(|a| !a.starts_with('-')) {
        let (algorithm, tag) = algorithms
            .into_iter()
            .find(|(_, t)| *t == tag)
            .expect("algorithm");
        return measure(algorithm, tag);
    }
    let me = std::env::current_exe().expect("current_exe");
    for (_, tag) in algorithms {
        let status = std::process::Command::new(&me)
            .arg(tag)
            .status()
            .expect("child");
        assert!(status.success(), "{tag}: {status}");
    }
}
