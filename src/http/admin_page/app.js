// tollgate's admin page. It talks to the admin API only (/v1/status,
// /v1/rules, /v1/rules/{rule}/top, /v1/allowlist…, /v1/denylist…, /v1/limits…) with the bearer token the operator
// typed, kept in sessionStorage (this tab only; never a cookie).
//
// Safe by construction: every value that comes from data (notes, keys,
// actors, error messages) is put in the page with textContent or as an
// attribute value, never parsed as markup; the server's CSP forbids inline
// scripts and styles besides.
'use strict';

(function () {
  const TOKEN_KEY = 'tollgate-admin-token';
  const OUTCOMES = ['allowed', 'limited', 'shadow_limited', 'fallback_allowed',
    'fallback_limited', 'not_allowlisted', 'allowlisted'];
  const CHART_MS = 5 * 60 * 1000;     // the chart's window
  const STATUS_EVERY_MS = 2000;       // health and the decisions chart
  const LIST_EVERY_MS = 1000;         // allowlist changes made elsewhere
  const RULES_EVERY_MS = 10000;       // a SIGHUP may change the rules
  const HURTING_EVERY_MS = 3000;      // who is hurting (flushed to Redis each second)
  const MAX_PAGES = 10;               // 10 000 entries listed at most (the DOM stays light)
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  const setText = (id, text) => { $(id).textContent = text; };

  // === Talking to the API ===

  class Unauthorized extends Error {}
  /// tollgate answered, with an error of its own (Redis unreachable, ...):
  /// the banner must not say tollgate cannot be reached.
  class Answered extends Error {}

  /// The banner's words for a failed poll or action.
  function trouble(e) {
    return e instanceof Answered
      ? 'tollgate answered with an error: ' + e.message
      : 'Cannot reach tollgate: ' + e.message;
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  /// One API call: `{status, ok, data}`; a 401 signs out with a message.
  async function api(method, path, body) {
    const headers = { Authorization: 'Bearer ' + token() };
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (method !== 'GET') headers['X-Tollgate-Actor'] = 'admin-page';
    const resp = await fetch(path, init);
    if (resp.status === 401) {
      signOut('Wrong token: the admin API refused it (401). Check it and sign in again.');
      throw new Unauthorized();
    }
    const text = await resp.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = { error: text.trim() }; }
    }
    return { status: resp.status, ok: resp.ok, data };
  }

  function errorOf(r) {
    return (r.data && r.data.error) || ('HTTP ' + r.status);
  }

  // === Signing in and out; the polling loops ===

  let generation = 0;   // bumped on sign-out: stops every loop of the session

  /// Run `fn` now and then every `ms` after it finishes (never overlapping).
  function every(ms, fn) {
    const gen = generation;
    const run = async () => {
      if (gen !== generation) return;
      try {
        await fn();
        if (fn === pollStatus) setText('conn-error', '');
      } catch (e) {
        if (!(e instanceof Unauthorized) && gen === generation) {
          setText('conn-error', trouble(e));
        }
      }
      if (gen === generation) setTimeout(run, ms);
    };
    run();
  }

  function signOut(message) {
    generation++;
    sessionStorage.removeItem(TOKEN_KEY);
    $('app').hidden = true;
    $('signout').hidden = true;
    $('signin').hidden = false;
    setText('signin-error', message || '');
    setText('node', '');
    $('token').focus();
  }

  async function signIn(typed) {
    sessionStorage.setItem(TOKEN_KEY, typed);
    setText('signin-error', '');
    let r;
    try {
      r = await api('GET', '/v1/status');
    } catch (e) {
      if (!(e instanceof Unauthorized)) {
        sessionStorage.removeItem(TOKEN_KEY);
        setText('signin-error', 'Cannot reach tollgate: ' + e.message);
      }
      return;
    }
    if (!r.ok) {
      // Only a token the API accepted is kept.
      sessionStorage.removeItem(TOKEN_KEY);
      setText('signin-error', errorOf(r));
      return;
    }
    start();
  }

  function start() {
    generation++;
    history.length = 0;
    panels.forEach((panel) => panel.reset());
    $('signin').hidden = true;
    $('app').hidden = false;
    $('signout').hidden = false;
    every(RULES_EVERY_MS, pollRules);
    every(STATUS_EVERY_MS, pollStatus);
    every(HURTING_EVERY_MS, pollHurting);
    panels.forEach((panel) => {
      every(LIST_EVERY_MS, panel.pollList);
      every(1000, panel.tick);
    });
  }

  // === Health ===

  async function pollStatus() {
    const r = await api('GET', '/v1/status');
    if (!r.ok) throw new Answered(errorOf(r));
    const s = r.data;
    renderHealth(s);
    sample(s.decisions);
    drawChart();
    renderRuleRates();
  }

  function renderHealth(s) {
    setText('node', 'tollgate ' + s.version + ' at ' + location.host);
    const redis = $('h-redis');
    if (s.redis.store === 'embedded') {
      redis.textContent = 'embedded store (no Redis)';
      redis.className = 'state-ok';
    } else {
      let words = s.redis.up ? 'up'
        : s.redis.refusing ? 'refusing calls (' + s.redis.refusing + '): decisions use on_redis_error'
        : 'unreachable: decisions use on_redis_error';
      if (s.redis.open_slots > 0) words += ', ' + s.redis.open_slots + ' slots open';
      for (const [cls, n] of Object.entries(s.redis.refusing_slots || {})) {
        words += ', ' + n + ' slots refusing (' + cls + ')';
      }
      if (!s.redis.reset_channel_up) words += ', reset channel down';
      redis.textContent = words;
      redis.className = s.redis.up ? 'state-ok' : 'state-bad';
    }
    const a = s.allowlist;
    const fresh = $('h-freshness');
    const age = a.sync_age_ms === null ? 'never synced' : 'last synced ' + seconds(a.sync_age_ms) + ' ago';
    const words = {
      in_sync: 'in sync',
      stale: 'stale: Redis unreachable, ' + age + '; serving the last known table',
      source_lost: 'source_lost: Redis holds no allowlist; serving the last known table',
      in_process: 'in process (embedded store)',
    };
    fresh.textContent = a.synced ? (words[a.freshness] || a.freshness) : 'not loaded yet';
    fresh.className = a.synced && (a.freshness === 'in_sync' || a.freshness === 'in_process') ? 'state-ok' : 'state-bad';
    fresh.dataset.freshness = a.freshness;
    setText('h-entries', String(a.entries));
    setText('h-epoch', a.epoch || '(none yet)');
    setText('h-seq', a.seq + (a.seq_lag > 0 ? ' (' + a.seq_lag + ' behind Redis)' : ''));
    setText('h-resyncs', Object.keys(a.resyncs).map((k) => k + ' ' + a.resyncs[k]).join(', '));
    setText('h-ready', s.ready ? 'ready' : 'not ready');
    setText('h-version', s.version);
    setText('h-uptime', duration(s.uptime_ms));
    renderFleet(s.fleet);
  }

  /// The replicas this node's last registry beat saw (null: the embedded store).
  function renderFleet(f) {
    const table = $('fleet');
    const body = $('fleet-body');
    while (body.firstChild) body.firstChild.remove();
    if (!f) {
      setText('fleet-summary', 'embedded store: this replica only');
      table.hidden = true;
      return;
    }
    const hashes = new Set(f.replicas.map((r) => r.config_hash));
    let words = f.replicas.length + ' live replica' + (f.replicas.length === 1 ? '' : 's') +
      '; while Redis is away, on_redis_error = "local" gives each replica ' +
      (f.fallback_divisor === 1 ? 'the whole limit' : '1/' + f.fallback_divisor + ' of a limit') +
      ' (fallback_replicas = ' + f.fallback_replicas + ')';
    if (hashes.size > 1) words += '; ' + hashes.size + ' different configs';
    if (!f.registry_up) words += '; registry unreachable, as last seen' +
      (f.seen_ms_ago === null ? ' (never)' : ' ' + seconds(f.seen_ms_ago) + ' ago');
    setText('fleet-summary', words);
    f.replicas.forEach((r) => {
      const tr = document.createElement('tr');
      tr.dataset.replica = r.id;
      [r.id + (r.this ? ' (this one)' : ''), r.version, r.config_hash, duration(r.uptime_ms),
        seconds(r.last_seen_ms_ago) + ' ago', r.listen].forEach((v) => {
        const td = document.createElement('td');
        td.textContent = v;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.hidden = f.replicas.length === 0;
  }

  // === Decisions chart ===

  const history = [];  // {t: ms, counts: {rule: {outcome: n}}}

  function sample(decisions) {
    const t = Date.now();
    history.push({ t, counts: decisions });
    while (history.length > 2 && history[1].t < t - CHART_MS) history.shift();
  }

  /// Per-second rate of each outcome between two samples, for `rules`
  /// (every rule when null). A counter that went down (a rule removed and
  /// added back by a reload) counts as 0.
  function rates(a, b, rules) {
    const dt = (b.t - a.t) / 1000;
    const out = {};
    OUTCOMES.forEach((o) => { out[o] = 0; });
    if (dt <= 0) return out;
    Object.keys(b.counts).forEach((rule) => {
      if (rules && !rules.includes(rule)) return;
      const before = a.counts[rule] || {};
      OUTCOMES.forEach((o) => {
        const d = (b.counts[rule][o] || 0) - (before[o] || 0);
        if (d > 0) out[o] += d / dt;
      });
    });
    return out;
  }

  function drawChart() {
    const svg = $('chart');
    while (svg.firstChild) svg.firstChild.remove();
    const W = 600, H = 150, top = 10, left = 40;
    const now = Date.now();
    const points = [];
    for (let i = 1; i < history.length; i++) {
      points.push({ t: history[i].t, r: rates(history[i - 1], history[i], null) });
    }
    let max = 0;
    points.forEach((p) => OUTCOMES.forEach((o) => { max = Math.max(max, p.r[o]); }));
    const scale = niceCeil(max);
    // The window grows with the history, from 20 seconds up to CHART_MS.
    const span = Math.min(CHART_MS, Math.max(20000, history.length ? now - history[0].t : 0));
    const x = (t) => left + (W - left) * Math.max(0, 1 - (now - t) / span);
    const y = (v) => top + (H - top) * (1 - v / scale);
    // Axes and labels.
    line(svg, left, top, left, H, 'axis');
    line(svg, left, H, W, H, 'axis');
    label(svg, left - 4, top + 4, fmtRate(scale), 'end');
    label(svg, left - 4, H, '0', 'end');
    label(svg, left, H + 16, span < 90000 ? '-' + Math.round(span / 1000) + ' s' : '-' + Math.round(span / 60000) + ' min', 'start');
    label(svg, W, H + 16, 'now', 'end');
    const legend = $('chart-legend');
    while (legend.firstChild) legend.firstChild.remove();
    const last = points.length ? points[points.length - 1].r : null;
    OUTCOMES.forEach((o) => {
      const peak = Math.max(0, ...points.map((p) => p.r[o]));
      const pl = document.createElementNS(SVG, 'polyline');
      // An outcome not seen in the window is drawn invisible (it would hide the axis).
      pl.setAttribute('class', 'line line-' + o + (peak > 0 ? '' : ' idle'));
      pl.setAttribute('points', points.map((p) => x(p.t).toFixed(1) + ',' + y(p.r[o]).toFixed(1)).join(' '));
      pl.dataset.max = String(peak);
      pl.dataset.outcome = o;
      svg.appendChild(pl);
      // The legend names the outcomes seen in the window, and always the first two.
      if (peak > 0 || o === 'allowed' || o === 'limited') {
        const li = document.createElement('li');
        li.dataset.outcome = o;
        const sw = document.createElement('span');
        sw.className = 'swatch swatch-' + o;
        li.appendChild(sw);
        li.appendChild(document.createTextNode(o + ' ' + fmtRate(last ? last[o] : 0) + ' (peak ' + fmtRate(peak) + ')'));
        legend.appendChild(li);
      }
    });
  }

  function line(svg, x1, y1, x2, y2, cls) {
    const l = document.createElementNS(SVG, 'line');
    l.setAttribute('x1', x1); l.setAttribute('y1', y1);
    l.setAttribute('x2', x2); l.setAttribute('y2', y2);
    l.setAttribute('class', cls);
    svg.appendChild(l);
  }

  function label(svg, x, y, text, anchor) {
    const t = document.createElementNS(SVG, 'text');
    t.setAttribute('x', x); t.setAttribute('y', y);
    t.setAttribute('text-anchor', anchor);
    t.setAttribute('class', 'tick');
    t.textContent = text;
    svg.appendChild(t);
  }

  function niceCeil(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function fmtRate(v) {
    return (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + '/s';
  }

  // === Rules ===

  let rulesJson = '';
  let rules = [];

  async function pollRules() {
    const r = await api('GET', '/v1/rules');
    if (!r.ok) throw new Answered(errorOf(r));
    const text = JSON.stringify(r.data.rules);
    if (text === rulesJson) return;
    rulesJson = text;
    rules = r.data.rules;
    renderRules();
  }

  function describeMatch(rule) {
    if (rule.descriptor) return 'RLS ' + rule.descriptor;
    const m = rule.match;
    const parts = [];
    if (m.path) parts.push('path ' + m.path);
    if (m.path_prefix) parts.push('path_prefix ' + m.path_prefix);
    if (m.path_starts_with) parts.push('path_starts_with ' + m.path_starts_with);
    if (m.methods) parts.push(m.methods.join(','));
    if (m.host) parts.push('host ' + m.host);
    return parts.length ? parts.join(' ') : 'every request';
  }

  function renderRules() {
    const body = $('rules-body');
    while (body.firstChild) body.firstChild.remove();
    rules.forEach((rule) => {
      const tr = document.createElement('tr');
      tr.dataset.rule = rule.name;
      const algo = rule.algorithm + (rule.burst !== null ? ' (burst ' + rule.burst + ')' : '') +
        (rule.lease ? ' (lease ' + rule.lease + ')' : '');
      [rule.name, describeMatch(rule), rule.descriptor ? 'descriptor values' : rule.key,
        (rule.limits.length ? rule.limits.join(', ') : '(gate only)') +
          (rule.ban ? '; ban after ' + rule.ban.after + ' in ' + rule.ban.within + ' for ' +
            rule.ban.for + (rule.ban.factor > 1 ? ' (×' + rule.ban.factor + ' each time, up to ' + rule.ban.max + ')' : '') : ''),
        algo, rule.allowlist,
        rule.on_redis_error, rule.shadow ? 'shadow' : 'no', ''].forEach((v, i) => {
        const td = document.createElement('td');
        td.textContent = v;
        if (i === 8) td.className = 'rates';
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    fillRuleSelect('counter-rule');
    fillRuleSelect('hurting-rule');
    renderRuleRates();
  }

  function renderRuleRates() {
    if (history.length < 2) return;
    const a = history[history.length - 2], b = history[history.length - 1];
    document.querySelectorAll('#rules-body tr').forEach((tr) => {
      const r = rates(a, b, [tr.dataset.rule]);
      const seen = OUTCOMES.filter((o) => r[o] > 0).map((o) => o + ' ' + fmtRate(r[o]));
      tr.querySelector('td.rates').textContent = seen.length ? seen.join(', ') : '0/s';
    });
  }

  // === A client's counters ===

  function counterPath() {
    const rule = $('counter-rule').value;
    const key = $('counter-key').value;
    if (!rule || !key) {
      setText('counter-message', 'Choose a rule and type a key (as the rule builds it, e.g. the client IP).');
      return null;
    }
    return '/v1/limits/' + encodeURIComponent(rule) + '/' + encodeURIComponent(key);
  }

  async function showCounters() {
    const path = counterPath();
    if (!path) return;
    const r = await api('GET', path);
    const table = $('counter-result');
    const body = $('counter-body');
    while (body.firstChild) body.firstChild.remove();
    if (!r.ok) {
      table.hidden = true;
      setText('counter-message', errorOf(r));
      return;
    }
    setText('counter-message', 'Counters of ' + r.data.key + ' for ' + r.data.rule + ' (' + r.data.algorithm + '):');
    r.data.limits.forEach((l) => {
      const tr = document.createElement('tr');
      [l.limit, String(l.used), String(l.remaining), duration(l.reset_ms)].forEach((v) => {
        const td = document.createElement('td');
        td.textContent = v;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.hidden = false;
  }

  async function resetCounters() {
    const path = counterPath();
    if (!path) return;
    const r = await api('DELETE', path);
    $('counter-result').hidden = true;
    setText('counter-message', r.ok
      ? 'Reset: ' + r.data.key + ' starts afresh for ' + r.data.rule + ' on every replica.'
      : errorOf(r));
  }

  // === Who is hurting: the keys a rule limited most, with a ban button ===

  const hurting = new Map();   // key -> {row, limited}
  let hurtingRule = null;      // the rule the rows belong to
  let pendingBan = null;       // the key whose ban awaits confirmation

  /// A select of the rules with limits, keeping the one chosen.
  function fillRuleSelect(id) {
    const select = $(id);
    const chosen = select.value;
    while (select.firstChild) select.firstChild.remove();
    rules.filter((r) => r.limits.length > 0).forEach((r) => {
      const opt = document.createElement('option');
      opt.value = r.name;
      opt.textContent = r.name;
      select.appendChild(opt);
    });
    if (chosen) select.value = chosen;
  }

  /// A ban is offered only for a rule keyed by the client address alone
  /// (its keys are addresses).
  function bannable(ruleName) {
    const rule = rules.find((r) => r.name === ruleName);
    return !!rule && !rule.descriptor && rule.key === 'ip';
  }

  async function pollHurting() {
    const rule = $('hurting-rule').value;
    if (!rule) {
      setText('hurting-message', 'No rule with limits.');
      return;
    }
    const minutes = $('hurting-minutes').value;
    const r = await api('GET', '/v1/rules/' + encodeURIComponent(rule) + '/top?count=20&minutes=' + minutes);
    if (rule !== hurtingRule) {
      hurting.forEach((item) => item.row.remove());
      hurting.clear();
      hurtingRule = rule;
      pendingBan = null;
    }
    // Not the banner's business: the embedded store has no merged counts.
    if (!r.ok) {
      setText('hurting-message', errorOf(r));
      return;
    }
    const seen = new Set();
    r.data.keys.forEach((k) => {
      seen.add(k.key);
      let item = hurting.get(k.key);
      if (!item) {
        item = { row: hurtingRow(k.key) };
        hurting.set(k.key, item);
      }
      item.limited = k.limited;
      item.row.querySelector('.limited').textContent = String(k.limited);
      renderBan(k.key, item);
    });
    hurting.forEach((item, key) => {
      if (!seen.has(key)) { item.row.remove(); hurting.delete(key); }
    });
    const body = $('hurting-body');
    r.data.keys.forEach((k) => body.appendChild(hurting.get(k.key).row));
    if (!$('hurting-message').dataset.sticky) {
      setText('hurting-message', r.data.keys.length
        ? 'Limited by ' + rule + ' in the last ' + minutes + ' minutes, on every replica.'
        : 'Nobody was limited by ' + rule + ' in the last ' + minutes + ' minutes.');
    }
  }

  function hurtingRow(key) {
    const tr = document.createElement('tr');
    tr.dataset.key = key;
    ['key', 'limited', 'actions'].forEach((c) => {
      const td = document.createElement('td');
      td.className = c;
      tr.appendChild(td);
    });
    tr.querySelector('.key').textContent = key;
    return tr;
  }

  /// The row's action, redrawn only when its state changes (a poll keeps a
  /// pending confirmation and the buttons under the pointer).
  function renderBan(key, item) {
    const td = item.row.querySelector('.actions');
    const want = !bannable(hurtingRule) ? 'none' : pendingBan === key ? 'confirm' : 'idle';
    if (td.dataset.state === want) return;
    td.dataset.state = want;
    while (td.firstChild) td.firstChild.remove();
    if (want === 'idle') {
      td.appendChild(button('Ban', 'ban danger', () => { pendingBan = key; refreshBans(); }));
    } else if (want === 'confirm') {
      const q = document.createElement('span');
      q.className = 'confirm-question';
      q.textContent = 'Deny ' + key + ' for ' + $('hurting-ttl').value.trim() + ' on every replica? ';
      td.appendChild(q);
      td.appendChild(button('Yes, ban', 'confirm-ban danger', () => { banKey(key).catch(() => {}); }));
      td.appendChild(button('Cancel', 'cancel-ban', () => { pendingBan = null; refreshBans(); }));
    }
  }

  function refreshBans() {
    hurting.forEach((item, key) => renderBan(key, item));
  }

  /// A manual denylist entry (actor: the page), like the denylist panel's.
  async function banKey(key) {
    const item = hurting.get(key);
    const ttl = $('hurting-ttl').value.trim();
    const body = {
      cidr: key,
      ttl,
      note: 'limited ' + (item ? item.limited : '?') + ' times by ' + hurtingRule +
        ' in ' + $('hurting-minutes').value + 'm (who is hurting)',
    };
    const r = await api('POST', '/v1/denylist', body);
    pendingBan = null;
    refreshBans();
    const msg = $('hurting-message');
    msg.dataset.sticky = '1';
    msg.textContent = r.ok
      ? 'Denied ' + r.data.cidr + ' for ' + ttl + ' on every replica (seq ' + r.data.seq + ').'
      : 'Not banned: ' + errorOf(r);
    msg.className = r.ok ? 'note state-ok' : 'note error';
    setTimeout(() => { delete msg.dataset.sticky; msg.className = 'note'; }, 10000);
    await panels[1].pollList();
  }

  function button(text, cls, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = cls;
    b.textContent = text;
    b.addEventListener('click', onClick);
    return b;
  }

  // === Allowlist and denylist: one panel each, the same code ===

  /// A list's panel: its element ids start with `p` ('' for the allowlist,
  /// 'deny-' for the denylist), its API is `/v1/<noun>`.
  function listPanel(p, noun) {
    const id = (name) => p + name;
    const base = '/v1/' + noun;

    const entries = new Map();   // cidr -> {entry, row}
    let clockOffset = 0;         // Redis time minus this browser's clock, ms
    let completeSeq = null;      // the seq of the last complete listing
    let pendingRemove = null;    // the CIDR whose removal awaits confirmation
    let matched = null;          // the CIDR the last address check found

    async function pollList() {
      const first = await api('GET', base + '?count=1000');
      if (!first.ok) throw new Answered(errorOf(first));
      clockOffset = first.data.now - Date.now();
      // A list of several pages is read again only when seq moved.
      if (first.data.cursor !== null && first.data.seq === completeSeq) return;
      const all = first.data.entries.slice();
      let cursor = first.data.cursor;
      let pages = 1;
      while (cursor !== null && pages < MAX_PAGES) {
        const r = await api('GET', base + '?count=1000&cursor=' + encodeURIComponent(cursor));
        if (!r.ok) throw new Answered(errorOf(r));
        all.push(...r.data.entries);
        cursor = r.data.cursor;
        pages++;
      }
      completeSeq = first.data.seq;
      reconcile(all);
      const count = cursor !== null
        ? 'the first ' + all.length + ' live entries (more exist; "Does an address match?" searches them all)'
        : all.length + (all.length === 1 ? ' live entry' : ' live entries');
      setText(id('entries-summary'), count + ' · epoch ' + (first.data.epoch || '(none yet)') + ' · seq ' + first.data.seq);
    }

    /// Update the table in place: rows are kept per CIDR, so a pending
    /// confirmation or a focused button survives each poll.
    function reconcile(list) {
      const seen = new Set();
      let added = false;
      list.forEach((e) => {
        seen.add(e.cidr);
        let item = entries.get(e.cidr);
        if (!item) {
          item = { row: makeRow(e.cidr) };
          entries.set(e.cidr, item);
          added = true;
        }
        item.entry = e;
        fillRow(item);
      });
      entries.forEach((item, cidr) => {
        if (!seen.has(cidr)) {
          item.row.remove();
          entries.delete(cidr);
          if (pendingRemove === cidr) pendingRemove = null;
        }
      });
      if (added) {
        const body = $(id('entries-body'));
        [...entries.values()]
          .sort((a, b) => b.entry.created_at - a.entry.created_at || (a.entry.cidr < b.entry.cidr ? -1 : 1))
          .forEach((item) => body.appendChild(item.row));
      }
    }

    function makeRow(cidr) {
      const tr = document.createElement('tr');
      tr.dataset.cidr = cidr;
      ['cidr', 'note', 'actor', 'created', 'remaining', 'actions'].forEach((c) => {
        const td = document.createElement('td');
        td.className = c;
        tr.appendChild(td);
      });
      return tr;
    }

    function fillRow(item) {
      const e = item.entry, tr = item.row;
      tr.querySelector('.cidr').textContent = e.cidr;
      tr.querySelector('.note').textContent = e.note;
      tr.querySelector('.actor').textContent = e.actor;
      tr.querySelector('.created').textContent = when(e.created_at);
      tr.classList.toggle('match', matched === e.cidr);
      renderRemaining(item);
      renderActions(item);
    }

    function renderRemaining(item) {
      const td = item.row.querySelector('.remaining');
      if (item.entry.expires_at === null) {
        td.textContent = 'never expires';
        td.dataset.remainingMs = '';
        return;
      }
      const left = Math.max(0, item.entry.expires_at - (Date.now() + clockOffset));
      td.dataset.remainingMs = String(left);
      td.textContent = left > 0 ? duration(left) : 'expired';
    }

    function renderActions(item) {
      const td = item.row.querySelector('.actions');
      const cidr = item.entry.cidr;
      const want = pendingRemove === cidr ? 'confirm' : 'idle';
      if (td.dataset.state === want) return;
      td.dataset.state = want;
      while (td.firstChild) td.firstChild.remove();
      if (want === 'idle') {
        td.appendChild(button('Remove', 'remove', () => { pendingRemove = cidr; refreshActions(); }));
      } else {
        const q = document.createElement('span');
        q.className = 'confirm-question';
        q.textContent = 'Remove ' + cidr + '? ';
        td.appendChild(q);
        td.appendChild(button('Yes, remove', 'confirm-remove danger', () => removeEntry(cidr)));
        td.appendChild(button('Cancel', 'cancel-remove', () => { pendingRemove = null; refreshActions(); }));
      }
    }

    function refreshActions() {
      entries.forEach((item) => renderActions(item));
    }

    async function removeEntry(cidr) {
      const r = await api('DELETE', base + '/' + encodeURIComponent(cidr));
      pendingRemove = null;
      if (r.ok || r.status === 404) {
        const item = entries.get(cidr);
        if (item) { item.row.remove(); entries.delete(cidr); }
        setText(id('add-message'), r.ok ? 'Removed ' + cidr + ' (seq ' + r.data.seq + ').' : errorOf(r));
      } else {
        setText(id('add-message'), 'Not removed: ' + errorOf(r));
      }
      refreshActions();
    }

    async function addEntry() {
      ['cidr', 'ttl', 'note'].forEach((f) => {
        setText(id('add-') + f + '-error', '');
        $(id('add-' + f)).removeAttribute('aria-invalid');
      });
      setText(id('add-message'), '');
      const body = { cidr: $(id('add-cidr')).value.trim() };
      const ttl = $(id('add-ttl')).value.trim();
      const note = $(id('add-note')).value;
      if (ttl) body.ttl = ttl;
      if (note) body.note = note;
      const r = await api('POST', base + '', body);
      if (r.ok) {
        ['cidr', 'ttl', 'note'].forEach((f) => { $(id('add-' + f)).value = ''; });
        setText(id('add-message'), 'Added ' + r.data.cidr + ' (seq ' + r.data.seq + ').');
        await pollList();
        return;
      }
      // The API names the field it refuses; show its message next to it.
      const field = r.data && r.data.field;
      if (field === 'cidr' || field === 'ttl' || field === 'note') {
        setText(id('add-') + field + '-error', r.data.error);
        $(id('add-' + field)).setAttribute('aria-invalid', 'true');
      } else {
        setText(id('add-message'), errorOf(r));
      }
    }

    async function checkAddress() {
      const ip = $(id('check-ip')).value.trim();
      const r = await api('GET', base + '/check?ip=' + encodeURIComponent(ip));
      const out = $(id('check-result'));
      if (r.ok) {
        matched = r.data.cidr;
        const exp = r.data.expires_at === null ? 'never expires' : 'expires in ' + duration(r.data.remaining_ms);
        out.textContent = r.data.ip + ' matches ' + r.data.cidr + ' (' + exp + ', note: ' + JSON.stringify(r.data.note) + ', by ' + r.data.actor + ')';
        out.className = 'note state-ok';
      } else {
        matched = null;
        out.textContent = errorOf(r);
        out.className = r.status === 404 ? 'note' : 'note error';
      }
      entries.forEach((item) => item.row.classList.toggle('match', matched === item.entry.cidr));
    }

    function tick() {
      entries.forEach((item) => renderRemaining(item));
    }

    function clearCheck() {
      $(id('check-ip')).value = '';
      setText(id('check-result'), '');
      matched = null;
      entries.forEach((item) => item.row.classList.remove('match'));
    }

    /// Forget the rows (a new sign-in).
    function reset() {
      entries.forEach((item) => item.row.remove());
      entries.clear();
      completeSeq = null;
    }

    function wire() {
      onSubmit(id('add-form'), addEntry);
      onSubmit(id('check-form'), checkAddress);
      $(id('check-clear')).addEventListener('click', clearCheck);
    }

    return { pollList, tick, reset, wire };
  }

  // === Per-client overrides: list, set, remove (`/v1/overrides`) ===

  function overridesPanel() {
    const body = () => $('ovr-entries-body');
    const path = (o) => '/v1/overrides/' + encodeURIComponent(o.rule) + '/' + encodeURIComponent(o.key);
    let shown = [];
    let clockOffset = 0;

    const limitsText = (l) => Array.isArray(l) ? l.join(', ') : String(l);

    async function pollList() {
      const all = [];
      let cursor = null, pages = 0, first = null;
      do {
        const r = await api('GET', '/v1/overrides?count=1000' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
        if (!r.ok) throw new Answered(errorOf(r));
        first = first || r.data;
        all.push(...r.data.overrides);
        cursor = r.data.cursor;
        pages++;
      } while (cursor !== null && pages < MAX_PAGES);
      clockOffset = first.now - Date.now();
      all.sort((a, b) => a.rule < b.rule ? -1 : a.rule > b.rule ? 1 : (a.key < b.key ? -1 : 1));
      shown = all;
      render();
      setText('ovr-summary', all.length + (all.length === 1 ? ' override' : ' overrides') + ' · seq ' + first.seq);
    }

    function render() {
      const tbody = body();
      while (tbody.firstChild) tbody.firstChild.remove();
      shown.forEach((o) => {
        const tr = document.createElement('tr');
        [o.rule, o.key, limitsText(o.limits), o.note, o.actor, ''].forEach((text, i) => {
          const td = document.createElement('td');
          td.textContent = text;
          if (i === 5) { td.className = 'remaining'; td.dataset.expiresAt = o.expires_at === null ? '' : String(o.expires_at); }
          tr.appendChild(td);
        });
        const td = document.createElement('td');
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'remove';
        b.textContent = 'Remove';
        b.addEventListener('click', () => { remove(o).catch(() => {}); });
        td.appendChild(b);
        tr.appendChild(td);
        tbody.appendChild(tr);
      });
      tick();
    }

    function tick() {
      body().querySelectorAll('td.remaining').forEach((td) => {
        const at = td.dataset.expiresAt;
        if (!at) { td.textContent = 'until removed'; return; }
        const left = Math.max(0, Number(at) - (Date.now() + clockOffset));
        td.textContent = left > 0 ? duration(left) : 'expired';
      });
    }

    async function remove(o) {
      const r = await api('DELETE', path(o));
      setText('ovr-message', r.ok ? 'Removed ' + o.rule + ' / ' + o.key + ': back to the rule (seq ' + r.data.seq + ').' : errorOf(r));
      await pollList();
    }

    async function set() {
      const fields = ['rule', 'key', 'limits', 'ttl', 'note'];
      fields.forEach((f) => { setText('ovr-' + f + '-error', ''); $('ovr-' + f).removeAttribute('aria-invalid'); });
      setText('ovr-message', '');
      const o = { rule: $('ovr-rule').value.trim(), key: $('ovr-key').value };
      const typed = $('ovr-limits').value.trim();
      const req = {
        limits: (typed === 'unlimited' || typed === 'deny') ? typed
          : typed.split(',').map((s) => s.trim()).filter((s) => s),
      };
      const ttl = $('ovr-ttl').value.trim();
      const note = $('ovr-note').value;
      if (ttl) req.ttl = ttl;
      if (note) req.note = note;
      if (!o.rule || !o.key) {
        setText('ovr-message', 'A rule and a key are needed.');
        return;
      }
      const r = await api('PUT', path(o), req);
      if (r.ok) {
        setText('ovr-message', 'Set ' + r.data.rule + ' / ' + r.data.key + ': ' + limitsText(r.data.limits) + ' (seq ' + r.data.seq + ').');
        await pollList();
        return;
      }
      // The API names the field it refuses (limits[1] is the limits input).
      const field = r.data && r.data.field && r.data.field.replace(/\[\d+\]$/, '');
      if (fields.includes(field)) {
        setText('ovr-' + field + '-error', r.data.error);
        $('ovr-' + field).setAttribute('aria-invalid', 'true');
      } else {
        setText('ovr-message', errorOf(r));
      }
    }

    function reset() {
      shown = [];
      const tbody = body();
      while (tbody.firstChild) tbody.firstChild.remove();
    }

    function wire() { onSubmit('ovr-form', set); }

    return { pollList, tick, reset, wire };
  }

  const panels = [listPanel('', 'allowlist'), listPanel('deny-', 'denylist'), overridesPanel()];

  // === Formatting ===

  const pad = (n) => String(n).padStart(2, '0');

  function duration(ms) {
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400); s %= 86400;
    const h = Math.floor(s / 3600); s %= 3600;
    const m = Math.floor(s / 60); s %= 60;
    if (d) return d + 'd ' + h + 'h ' + pad(m) + 'm';
    if (h) return h + 'h ' + pad(m) + 'm ' + pad(s) + 's';
    if (m) return m + 'm ' + pad(s) + 's';
    return s + 's';
  }

  function seconds(ms) { return (ms / 1000).toFixed(1) + 's'; }

  function when(ms) {
    const d = new Date(ms);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  // === Wiring ===

  /// A form's submit runs `fn` (the CSP's form-action 'none' forbids real submits).
  function onSubmit(id, fn) {
    $(id).addEventListener('submit', (ev) => {
      ev.preventDefault();
      fn().catch((e) => {
        if (!(e instanceof Unauthorized)) setText('conn-error', trouble(e));
      });
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    onSubmit('signin', async () => {
      const typed = $('token').value;
      $('token').value = '';
      await signIn(typed);
    });
    $('signout').addEventListener('click', () => signOut(''));
    onSubmit('counters', showCounters);
    $('counter-reset').addEventListener('click', () => { resetCounters().catch(() => {}); });
    panels.forEach((panel) => panel.wire());
    ['hurting-rule', 'hurting-minutes'].forEach((sel) => $(sel).addEventListener('change', () => {
      pollHurting().catch(() => {});
    }));
    if (token()) {
      start();
    } else {
      $('token').focus();
    }
  });
})();
