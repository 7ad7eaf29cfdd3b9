//! Every `serve` (and `tollgate follow`) follows the allowlist: a snapshot,
//! then `XREAD BLOCK` on the stream from the snapshot's id, on a connection
//! of its own (a blocking read on the limiter's multiplexed connection would
//! stall it). Never a consumer group: every node needs every event.
//!
//! A snapshot never holds Redis for long, at any list size: record the
//! position (`epoch`, `seq`, stream id: one O(1) script), read `entries` in
//! HSCAN pages of `SNAPSHOT_PAGE` (at most `allowlist.snapshot_pages_per_second`,
//! each page taken from the budget all nodes share, at most
//! `allowlist.snapshot_fleet_pages_per_second`: `snapshot_budget`), then
//! apply the stream's events from the recorded position up to the `seq`
//! Redis holds after the last page; only then is the table published. The
//! table keeps the recorded `seq` while paging, so each of those events is
//! the next in sequence: an upsert sets the entry, a remove or expire deletes
//! it, whatever the pages saw (README, "IP allowlist", says why that is a
//! consistent snapshot). Before each snapshot a node waits a random time, up
//! to what its paging will take (at most `allowlist.snapshot_jitter_max`), so
//! a fleet told to resync at once spreads out.
//!
//! Redis Streams do not tell a reader that entries after its position were
//! trimmed, nor that the stream was recreated, so the follower checks the
//! protocol's own `epoch` and `seq`:
//!
//! - an event `seq` more than one past the node's, or `meta.seq` ahead while
//!   nothing is left to read after the node's id → resync (`gap`);
//! - another epoch in an event or in `meta` → resync (`epoch`);
//! - `meta.seq` below the node's, the same `seq` written later than the
//!   event the node applied, or an event after the node's id whose `seq` is
//!   not above the node's (history rewritten) → resync (`backwards`);
//! - an event it cannot read whole → resync (`unknown_event`), never half-applied;
//! - each `XREAD` that waits a whole block without events → a look at `meta`,
//!   so a flush or a restart is noticed within one block period;
//! - Redis unreachable → the last table keeps serving (entries still expire
//!   on time); reconnect with backoff and jitter, then continue the tail when
//!   `meta` allows, else resync;
//! - Redis without `meta` (restarted empty, flushed) while this node holds a
//!   table of an epoch → `source_lost`: the last table keeps serving, and the
//!   node offers it to the fleet's election (`recovery`): the one elected
//!   puts it back as a new epoch, every node then resyncs to that (its old
//!   table serving until the new one is loaded: no gap).
//!
//! Each state change is logged once, and counted (see `status`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use redis::streams::StreamReadReply;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::details::{note_event, About, AboutMap};
use super::event::{stream_entries, Event};
use super::kind::ListKind;
use super::member::{Member, MemberSet};
use super::recovery;
use super::redis_store::{RedisAllowlist, SNAPSHOT_PAGE};
use super::snapshot_budget::PageBudget;
use super::status::Reason;
use super::table::{Applied, Clock, Table};
use super::{state_file, Allowlist};
use crate::redis_conn::RedisConn;
use crate::redis_conn::StoreError;

mod lost;

/// How long one XREAD waits for events before `meta` is checked.
pub const BLOCK: Duration = Duration::from_secs(1);
/// Events read per XREAD; one table is published per batch. Small enough
/// that one read stays well under 1 ms of Redis time.
const BATCH: usize = 200;
/// A snapshot page slower than this backs off (see `Pacing::pause_after`).
const SLOW_PAGE: Duration = Duration::from_millis(2);
const SLOW_PAGE_BACKOFF: u32 = 4;
const SLOW_PAGE_PAUSE_MAX: Duration = Duration::from_secs(1);
/// After two resyncs in a row each this soon after the last, the next waits this long.
const MIN_RESYNC_GAP: Duration = Duration::from_secs(1);
/// Reconnect backoff: doubling from the first to the last, jittered.
/// How often the follower reads Redis `TIME` again to refine its clock (the
/// table's estimate of Redis time, which decides when entries expire here
/// and how late an event was applied): a reading replaces the clock only
/// if its round trip was no longer than the one the clock came from, since
/// a reading errs by up to half its round trip. A node that started while
/// the machine was busy (a slow snapshot round trip) thus converges to a
/// clock within half its fastest round trip of Redis's.
const CLOCK_EVERY: Duration = Duration::from_secs(10);
/// The first readings after a start come faster, one a second: a node that
/// started with a poor reading gets a good one within seconds.
const CLOCK_FIRST_READINGS: u32 = 10;
/// A clock older than this is replaced by the next reading, however slow:
/// the node's monotonic clock and Redis's drift apart slowly.
const CLOCK_MAX_AGE: Duration = Duration::from_secs(300);
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How a node reads its snapshots (`allowlist.snapshot_*`).
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    pub pages_per_second: u32,
    /// Every node's pages together (a budget in Redis).
    pub fleet_pages_per_second: u32,
    pub jitter_max: Duration,
}

impl Pacing {
    /// How long paging `entries` takes at this rate (a lone node's: the
    /// lower of its own rate and the fleet's).
    fn duration(&self, entries: u64) -> Duration {
        let pages = entries.div_ceil(SNAPSHOT_PAGE as u64);
        let rate = self
            .pages_per_second
            .min(self.fleet_pages_per_second)
            .max(1);
        Duration::from_secs_f64(pages as f64 / rate as f64)
    }

    fn budget(&self) -> PageBudget {
        PageBudget::per_second(self.fleet_pages_per_second)
    }

    /// The pause after a page whose call took `took`, beyond the rate's own
    /// tick. A 200-entry page costs Redis 0.4–0.8 ms when it is idle; a
    /// slower round trip means Redis (or this node) waits for a CPU, and the
    /// limiter's calls queue behind every page. Then the node steps back for
    /// `SLOW_PAGE_BACKOFF` times as long: while Redis is slow each node pages
    /// at most a fifth of the time, whatever the configured rate, so a fleet
    /// resyncing at once leaves room for the limiter (measured: issue 17).
    fn pause_after(took: Duration) -> Duration {
        if took > SLOW_PAGE {
            (took * SLOW_PAGE_BACKOFF).min(SLOW_PAGE_PAUSE_MAX)
        } else {
            Duration::ZERO
        }
    }

    /// A random wait before a snapshot of `entries`: uniform up to the
    /// paging's own duration (so starts spread over about one snapshot's
    /// time), at most `jitter_max`. A small list waits next to nothing.
    fn jitter(&self, entries: u64) -> Duration {
        let window = self.duration(entries).min(self.jitter_max);
        window.mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

/// Follow the allowlist in Redis until `stop`, keeping the state file (if
/// any); returns at once for the embedded store.
pub async fn run<M: Member>(list: Arc<Allowlist<M>>, stop: CancellationToken) {
    let Some(redis) = list.redis() else { return };
    let follower = Follower {
        list: &list,
        redis,
        table: (*list.table()).clone(),
        known: list.is_synced(),
        clock_from_file: list.is_synced(),
        clock_sample: None,
        clock_tried: None,
        clock_readings: 0,
        last_snapshot: None,
        quick_resyncs: 0,
    };
    // Span names are static: one pair per list.
    let (follow_span, file_span) = match list.kind() {
        ListKind::Allow => (
            tracing::info_span!("allowlist_follower"),
            tracing::info_span!("allowlist_state_file"),
        ),
        ListKind::Deny => (
            tracing::info_span!("denylist_follower"),
            tracing::info_span!("denylist_state_file"),
        ),
        ListKind::Override => (
            tracing::info_span!("overrides_follower"),
            tracing::info_span!("overrides_state_file"),
        ),
    };
    tokio::join!(
        follower.run(&stop).instrument(follow_span),
        state_file::keep(list.clone(), stop.clone()).instrument(file_span),
    );
}

/// Whether a reading of Redis time with round trip `rtt` should replace a
/// clock that came from a reading of round trip `sample.0` taken at
/// `sample.1` (`None`: not from Redis), or from the state file.
fn takes_reading(rtt: Duration, sample: Option<(Duration, Instant)>, from_file: bool) -> bool {
    from_file
        || match sample {
            None => true,
            Some((best, at)) => rtt <= best || at.elapsed() >= CLOCK_MAX_AGE,
        }
}

/// What the follower does next.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Load a fresh snapshot.
    Snapshot(Reason),
    /// Compare `meta` with this node's position.
    Check,
    /// Read the next events. Without `block`, `meta` said events are waiting:
    /// finding none means they were trimmed away.
    Tail { block: bool },
}

struct Follower<'a, M: Member> {
    list: &'a Allowlist<M>,
    redis: &'a RedisAllowlist<M>,
    /// The working copy; a clone is published after each change.
    table: Table<M>,
    /// `table` reflects a known dataset (a snapshot, or the state file).
    known: bool,
    /// The table's clock was estimated from the state file and the node's
    /// wall clock: measure Redis time at the first contact.
    clock_from_file: bool,
    /// The round trip of the `TIME` reading the clock came from, and when it
    /// was taken (`None`: not from Redis yet).
    clock_sample: Option<(Duration, Instant)>,
    /// When `TIME` was last read to refine the clock (`CLOCK_EVERY`), and
    /// how many times it was.
    clock_tried: Option<Instant>,
    clock_readings: u32,
    last_snapshot: Option<Instant>,
    quick_resyncs: u32,
}

impl<M: Member> Follower<'_, M> {
    async fn run(mut self, stop: &CancellationToken) {
        let mut step = if self.known {
            // From the state file: resume the tail if nothing was missed.
            Step::Check
        } else {
            Step::Snapshot(Reason::Start)
        };
        let mut conn: Option<RedisConn> = None;
        let mut delay = RETRY_MIN;
        loop {
            if let Step::Snapshot(_) = step {
                if !self.pace_resyncs(stop).await {
                    return;
                }
            }
            // A new connection alone proves little: the step after it does.
            let connecting = conn.is_none();
            let result = match conn.as_mut() {
                Some(c) => tokio::select! {
                    _ = stop.cancelled() => return,
                    r = self.step(c, step) => r,
                },
                None => {
                    let connected = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = connect(self.redis) => r,
                    };
                    connected.map(|c| {
                        conn = Some(c);
                        step
                    })
                }
            };
            match result {
                Ok(next) => {
                    if !connecting {
                        self.reachable();
                        delay = RETRY_MIN;
                    }
                    step = next;
                }
                Err(e) => {
                    conn = None;
                    self.unreachable(&e);
                    // A pending resync stays pending; anything else resumes
                    // with a look at `meta` (continue the tail if possible).
                    if !matches!(step, Step::Snapshot(_)) {
                        step = Step::Check;
                    }
                    // Jitter in [delay/2, delay]: nodes do not reconnect in lockstep.
                    let sleep = delay.mul_f64(rand::rng().random_range(0.5..=1.0));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(sleep) => {}
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    async fn step(&mut self, conn: &mut RedisConn, step: Step) -> Result<Step, StoreError> {
        let every = if self.clock_readings < CLOCK_FIRST_READINGS {
            Duration::from_secs(1)
        } else {
            CLOCK_EVERY
        };
        if !matches!(step, Step::Snapshot(_))
            && self.clock_tried.is_none_or(|t| t.elapsed() >= every)
        {
            self.measure_clock(conn).await?;
        }
        match step {
            Step::Snapshot(reason) => self.resync(conn, reason).await,
            Step::Check => self.check(conn).await,
            Step::Tail { block } => self.tail(conn, block).await,
        }
    }

    /// Resyncs are rare; a stream that keeps asking for them right after
    /// each snapshot (a hand-written event) gets one a second. False: stopped.
    async fn pace_resyncs(&mut self, stop: &CancellationToken) -> bool {
        let quick = self
            .last_snapshot
            .is_some_and(|t| t.elapsed() < MIN_RESYNC_GAP);
        self.quick_resyncs = if quick { self.quick_resyncs + 1 } else { 0 };
        if self.quick_resyncs >= 2 {
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(MIN_RESYNC_GAP) => {}
            }
        }
        true
    }

    /// Load a fresh snapshot in pages and publish it once caught up, unless
    /// Redis holds no allowlist while this node knows one (then keep serving
    /// it: `source_lost`). Until then the old table keeps serving.
    async fn resync(&mut self, conn: &mut RedisConn, reason: Reason) -> Result<Step, StoreError> {
        self.last_snapshot = Some(Instant::now());
        let pacing = self.list.pacing;
        let entries: u64 = redis::cmd("HLEN")
            .arg(&self.redis.keys().entries)
            .query_async(conn)
            .await
            .map_err(StoreError::from)?;
        tokio::time::sleep(pacing.jitter(entries)).await;
        let started = Instant::now();
        let before = Instant::now();
        let pos = self.redis.position(conn).await?;
        let after = Instant::now();
        let status = self.list.status();
        status.contact();
        if pos.epoch.is_empty() && self.known && !self.table.epoch.is_empty() {
            return self.lost().await;
        }
        let birth = self.redis.birth(conn).await?;
        let live = self.table.live_count(self.table.clock.now_ms());
        if self.known && recovery::is_overwritten(&pos.epoch, &birth.born, &self.table.epoch, live)
        {
            return self.merge_overwritten(&pos.epoch).await;
        }
        status.set_birth(birth);
        // Redis read its clock somewhere in between; the midpoint errs by at most half the round trip.
        let clock = self.better_clock(
            Clock::synced(pos.now_ms, before + (after - before) / 2),
            before,
            after,
        );
        let mut table = Table::<M>::empty(pos.epoch, pos.seq, clock);
        table.last_id = pos.last_id;
        let mut about = AboutMap::<M>::new();
        let mut pages = tokio::time::interval(Duration::from_secs_f64(
            1.0 / pacing.pages_per_second.max(1) as f64,
        ));
        pages.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cursor = 0;
        let mut budget_waits = 0;
        // A list of one page costs Redis no more than one admin listing call:
        // it takes no share of the budget (and a node with an empty list
        // writes no key at its start).
        let budgeted = pos.entries > SNAPSHOT_PAGE as u64;
        loop {
            pages.tick().await;
            if budgeted {
                budget_waits += self.take_budget(conn, budget_waits == 0).await?;
            }
            let asked = Instant::now();
            let (next, page) = self.redis.page(conn, cursor).await?;
            let pause = Pacing::pause_after(asked.elapsed());
            if !pause.is_zero() {
                status.snapshot_backoffs.inc();
                tokio::time::sleep(pause).await;
            }
            status.contact();
            if cursor == 0 && next != 0 {
                table.set.reserve(pos.entries as usize, &page);
                about.reserve(pos.entries as usize);
            }
            for e in page {
                about.insert(e.cidr.clone(), About::of(&e));
                table.set.insert(e.cidr, e.expires_at, e.payload);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if let Some(next) = self.catch_up(conn, &mut table, &mut about).await? {
            return Ok(next);
        }
        self.table = table;
        self.clock_from_file = false;
        self.list.details().replace(about);
        self.list.publish(&self.table);
        status
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        self.list.mark_synced();
        self.known = true;
        status.resynced(reason);
        status.set_seq_lag(0);
        if status.set_source_lost(false) {
            tracing::info!(epoch = %self.table.epoch, "{0}: Redis holds the {0} again; following it", self.list.kind());
        }
        tracing::info!(
            %reason,
            entries = self.table.len(),
            seq = self.table.seq,
            epoch = %self.table.epoch,
            ms = started.elapsed().as_millis() as u64,
            budget_waits,
            "{0} snapshot loaded", self.list.kind()
        );
        Ok(Step::Tail { block: true })
    }

    /// Take the next page from the fleet's budget, waiting while other nodes
    /// have spent it (each wait at most a window and a quarter; the whole
    /// step is dropped on shutdown). How many times it waited. The first wait
    /// of a snapshot is logged (`first`); the load's log line counts them all.
    async fn take_budget(&self, conn: &mut RedisConn, first: bool) -> Result<u32, StoreError> {
        let budget = self.list.pacing.budget();
        let status = self.list.status();
        let mut waits = 0;
        while let Some(wait) = self.redis.take_snapshot_page(conn, budget).await? {
            status.contact();
            if first && waits == 0 {
                tracing::info!(
                    fleet_pages_per_second = self.list.pacing.fleet_pages_per_second,
                    "{0}: other nodes are paging snapshots too; waiting for shares of the fleet's budget", self.list.kind()
                );
            }
            waits += 1;
            status.snapshot_budget_waits.inc();
            tokio::time::sleep(budget.retry_after(wait)).await;
        }
        Ok(waits)
    }

    /// After paging: apply every event from the recorded position up to the
    /// `seq` Redis holds now, in order. `Some(step)`: the snapshot cannot be
    /// completed (another epoch, a gap, history rewritten): resync.
    async fn catch_up(
        &mut self,
        conn: &mut RedisConn,
        table: &mut Table<M>,
        about: &mut AboutMap<M>,
    ) -> Result<Option<Step>, StoreError> {
        let (epoch, target): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(&self.redis.keys().meta)
            .arg(&["epoch", "seq"])
            .query_async(conn)
            .await
            .map_err(StoreError::from)?;
        let (epoch, target) = (epoch.unwrap_or_default(), target.unwrap_or(0));
        if !table.epoch.is_empty() && epoch != table.epoch {
            tracing::warn!(ours = %table.epoch, redis = %epoch, "{0}: a new epoch while paging a snapshot; resyncing", self.list.kind());
            return Ok(Some(Step::Snapshot(Reason::Epoch)));
        }
        if target < table.seq {
            return Ok(Some(Step::Snapshot(Reason::Backwards)));
        }
        while table.seq < target {
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("STREAMS")
                .arg(&self.redis.keys().events)
                .arg(&table.last_id)
                .query_async(conn)
                .await
                .map_err(StoreError::from)?;
            let events = stream_entries(reply);
            if events.is_empty() {
                tracing::warn!(
                    seq = table.seq,
                    target,
                    "{0}: events written while paging a snapshot were trimmed; resyncing",
                    self.list.kind()
                );
                return Ok(Some(Step::Snapshot(Reason::Gap)));
            }
            for entry in events {
                let applied = match Event::<M>::from_fields(&entry.map) {
                    Ok(ev) => {
                        let applied = table.apply(&ev);
                        if applied == Applied::Applied {
                            note_event(about, &ev, id_ms(&entry.id));
                        }
                        applied
                    }
                    Err(_) => Applied::Resync(Reason::UnknownEvent),
                };
                if let Applied::Resync(reason) = applied {
                    tracing::warn!(id = %entry.id, %reason, "{0}: cannot apply an event written while paging a snapshot; resyncing", self.list.kind());
                    return Ok(Some(Step::Snapshot(reason)));
                }
                table.last_id = entry.id;
            }
        }
        Ok(None)
    }

    /// The cheap look at `meta`: is this node still on Redis's history?
    async fn check(&mut self, conn: &mut RedisConn) -> Result<Step, StoreError> {
        if self.clock_from_file {
            self.measure_clock(conn).await?;
        }
        let (epoch, seq, last_id): (Option<String>, Option<u64>, Option<String>) =
            redis::cmd("HMGET")
                .arg(&self.redis.keys().meta)
                .arg(&["epoch", "seq", "last_id"])
                .query_async(conn)
                .await
                .map_err(StoreError::from)?;
        let status = self.list.status();
        status.contact();
        let Some(epoch) = epoch else {
            if !self.table.epoch.is_empty() {
                return self.lost().await;
            }
            return Ok(Step::Tail { block: true });
        };
        let ours = &self.table;
        if !ours.epoch.is_empty() && epoch != ours.epoch {
            tracing::warn!(ours = %ours.epoch, redis = %epoch, "{0}: Redis holds another epoch; resyncing", self.list.kind());
            return Ok(Step::Snapshot(Reason::Epoch));
        }
        if status.set_source_lost(false) {
            tracing::info!(%epoch, "{0}: Redis holds this node's {0} again", self.list.kind());
        }
        let seq = seq.unwrap_or(0);
        status.set_seq_lag(seq.saturating_sub(ours.seq));
        if seq < ours.seq {
            tracing::warn!(
                ours = ours.seq,
                redis = seq,
                "{0}: Redis went backwards (a failover or lost writes); resyncing",
                self.list.kind()
            );
            return Ok(Step::Snapshot(Reason::Backwards));
        }
        if seq > ours.seq {
            return Ok(Step::Tail { block: false });
        }
        let later = last_id.as_deref().and_then(stream_id) > stream_id(&ours.last_id);
        if seq > 0 && later {
            tracing::warn!(
                seq,
                "{0}: Redis rewrote this node's last event (a failover); resyncing",
                self.list.kind()
            );
            return Ok(Step::Snapshot(Reason::Backwards));
        }
        Ok(Step::Tail { block: true })
    }

    /// Read Redis `TIME` and keep it as the table's clock if it is better
    /// than the one in use (`better_clock`): at the first contact after a
    /// start from the state file, and every `CLOCK_EVERY`.
    async fn measure_clock(&mut self, conn: &mut RedisConn) -> Result<(), StoreError> {
        let before = Instant::now();
        self.clock_tried = Some(before);
        self.clock_readings = self.clock_readings.saturating_add(1);
        let (s, us): (u64, u64) = redis::cmd("TIME")
            .query_async(conn)
            .await
            .map_err(StoreError::from)?;
        let after = Instant::now();
        let read = Clock::synced(s * 1000 + us / 1000, before + (after - before) / 2);
        let kept = self.table.clock;
        self.table.clock = self.better_clock(read, before, after);
        if self.table.clock != kept {
            self.list.publish(&self.table);
        }
        self.clock_from_file = false;
        Ok(())
    }

    /// The clock to use given a new reading of Redis time taken between
    /// `before` and `after`: the reading, when its round trip was no longer
    /// than that of the clock in use (which errs by up to half of it), or
    /// that clock is old, or came from the state file; else the clock in use.
    fn better_clock(&mut self, read: Clock, before: Instant, after: Instant) -> Clock {
        let rtt = after - before;
        if takes_reading(rtt, self.clock_sample, self.clock_from_file) {
            self.clock_sample = Some((rtt, after));
            read
        } else {
            self.table.clock
        }
    }

    /// Read and apply the next events.
    async fn tail(&mut self, conn: &mut RedisConn, block: bool) -> Result<Step, StoreError> {
        let mut xread = redis::cmd("XREAD");
        xread.arg("COUNT").arg(BATCH);
        if block {
            xread.arg("BLOCK").arg(BLOCK.as_millis() as u64);
        }
        xread
            .arg("STREAMS")
            .arg(&self.redis.keys().events)
            .arg(&self.table.last_id);
        let reply: Option<StreamReadReply> =
            xread.query_async(conn).await.map_err(StoreError::from)?;
        let status = self.list.status();
        status.contact();
        let entries = stream_entries(reply);
        if entries.is_empty() {
            if block {
                return Ok(Step::Check);
            }
            tracing::warn!(
                seq = self.table.seq,
                last_id = %self.table.last_id,
                "{0}: events after this node's position were trimmed from the stream; resyncing", self.list.kind()
            );
            return Ok(Step::Snapshot(Reason::Gap));
        }
        let started = Instant::now();
        let mut changed = false;
        let mut next = Step::Tail { block: true };
        for entry in entries {
            let outcome = match Event::<M>::from_fields(&entry.map) {
                Ok(ev) => {
                    let applied = self.table.apply(&ev);
                    if applied == Applied::Applied {
                        let ms = id_ms(&entry.id);
                        self.list.details().update(|m| note_event(m, &ev, ms));
                        // The table's clock follows Redis's (synced at each snapshot).
                        status.applied_late(self.table.clock.now_ms().saturating_sub(ms));
                    }
                    applied
                }
                Err(e) => {
                    tracing::warn!(id = %entry.id, error = %e, "{0}: an event this node cannot read; not applying it, resyncing", self.list.kind());
                    next = Step::Snapshot(Reason::UnknownEvent);
                    break;
                }
            };
            match outcome {
                Applied::Applied => changed = true,
                Applied::Resync(reason) => {
                    tracing::warn!(id = %entry.id, %reason, seq = self.table.seq, "{0}: cannot apply the next event; resyncing", self.list.kind());
                    next = Step::Snapshot(reason);
                    break;
                }
            }
            self.table.last_id = entry.id;
        }
        if changed {
            self.list.publish(&self.table);
            status
                .apply_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(next)
    }

    fn unreachable(&self, e: &StoreError) {
        if self.list.status().set_unreachable(true) {
            tracing::warn!(error = %e, "{0}: Redis unreachable; serving the last known table (entries still expire on time)", self.list.kind());
        }
    }

    fn reachable(&self) {
        if self.list.status().set_unreachable(false) {
            tracing::info!("{0}: Redis back", self.list.kind());
        }
    }
}

/// The time part of a stream id (ms, Redis time); 0 when unreadable.
fn id_ms(id: &str) -> u64 {
    stream_id(id).map_or(0, |(ms, _)| ms)
}

/// A stream id `ms-n` as a comparable pair.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, n) = id.split_once('-')?;
    Some((ms.parse().ok()?, n.parse().ok()?))
}

/// The follower's own connection. Its response timeout outlasts BLOCK.
async fn connect<M: Member>(redis: &RedisAllowlist<M>) -> Result<RedisConn, StoreError> {
    let bound = BLOCK + Duration::from_secs(2);
    tokio::time::timeout(bound, redis.endpoint().connect(bound))
        .await
        .map_err(|_| StoreError::Timeout(bound))?
        .map_err(StoreError::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_ids_compare_as_numbers() {
        use super::stream_id;
        assert!(stream_id("1700000000123-10") > stream_id("1700000000123-9"));
        assert!(stream_id("1700000000124-0") > stream_id("1700000000123-99"));
        assert_eq!(stream_id("0-0"), Some((0, 0)));
        assert_eq!(stream_id("x"), None);
    }

    #[test]
    fn a_slow_snapshot_page_makes_the_node_step_back_four_times_as_long() {
        use super::Pacing;
        use std::time::Duration;
        let ms = Duration::from_millis;
        // An idle Redis serves a page in under a millisecond: no pause beyond the rate.
        assert_eq!(
            Pacing::pause_after(Duration::from_micros(800)),
            Duration::ZERO
        );
        assert_eq!(Pacing::pause_after(ms(2)), Duration::ZERO);
        // A busy one: the node pages at most a fifth of the time.
        assert_eq!(Pacing::pause_after(ms(3)), ms(12));
        assert_eq!(Pacing::pause_after(ms(30)), ms(120));
        // A stall never parks the snapshot for long.
        assert_eq!(
            Pacing::pause_after(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_reading_replaces_the_clock_only_when_its_round_trip_is_no_longer_or_the_clock_is_old() {
        use super::{takes_reading, CLOCK_MAX_AGE};
        use std::time::{Duration, Instant};
        let ms = Duration::from_millis;
        let now = Instant::now();
        // Not from Redis yet, or from the state file: any reading.
        assert!(takes_reading(ms(80), None, false));
        assert!(takes_reading(ms(80), Some((ms(1), now)), true));
        // A slow start (40 ms) is replaced by a faster reading, not by a slower one.
        assert!(takes_reading(ms(2), Some((ms(40), now)), false));
        assert!(takes_reading(ms(40), Some((ms(40), now)), false));
        assert!(!takes_reading(ms(41), Some((ms(40), now)), false));
        // An old clock takes the next reading, however slow (drift).
        let old = now.checked_sub(CLOCK_MAX_AGE).unwrap();
        assert!(takes_reading(ms(500), Some((ms(1), old)), false));
    }
}
