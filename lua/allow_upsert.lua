-- allow_upsert: add a list entry, or refresh one (new expiry, note and
-- actor: a new login refreshes the entry), for the admin API, the CLI and the
-- admin page. The write itself is lua/list_upsert.lua's (concatenated before
-- this file): the entry, its expiry index, `seq` and the stream event change
-- together in this one atomic script.
--
-- KEYS[1]  meta     hash: epoch, seq, last_id
-- KEYS[2]  entries  hash: canonical member (a CIDR; an override's rule/key) -> JSON
--                   {expires_at, note, created_at, actor, ver, payload?}
-- KEYS[3]  exp      sorted set: CIDR scored by expires_at (permanent entries are not in it)
-- KEYS[4]  events   stream
-- KEYS[5]  lost     hash: the witness of a lost dataset (see allow_recover.lua)
--          All five share the list's hash tag: {<prefix>:allow}, {<prefix>:deny}, {<prefix>:override}.
-- ARGV[1]  cidr, canonical (the caller validated it: nothing here rejects input)
-- ARGV[2]  ttl in ms, > 0; or 0 for a permanent entry
-- ARGV[3]  note (at most 256 bytes)
-- ARGV[4]  actor (who made the change)
-- ARGV[5]  epoch to create if the dataset has none yet (random, from the caller)
-- ARGV[6]  event retention in ms: events older than this are trimmed (XADD MINID ~)
-- ARGV[7]  event cap: the stream is then trimmed to about this many (XTRIM MAXLEN ~)
--          (one XADD cannot take both MINID and MAXLEN, hence the XTRIM)
-- ARGV[8]  "1": the operator means to start a new, empty allowlist if Redis
--          holds none (`--new-epoch`); "0": refuse that while `lost` exists
-- ARGV[9]  optional: "1": an exempt allowlist entry (never banned by a rule)
-- ARGV[10] optional: the entry's payload as JSON text, passed through as is
--          (an override's limits: `["100/m"]`, `"unlimited"`, `"deny"`);
--          absent or "" for the IP lists, whose entries carry none. Written
--          as the entry's `payload` field and the event's `payload` field.
-- Returns  {seq, expires_at, created_at, epoch}, all strings; expires_at "0" = never.
--          Or, when Redis holds no allowlist, a node witnessed one (`lost`)
--          and ARGV[8] is "0": {"lost", node, epoch, seq, entries} of that
--          witness, and nothing is written. A write never silently starts
--          a fleet's allowlist from nothing.
--          Times are ms since the Unix epoch from Redis TIME; created_at is the
--          time of this write.
--
-- Example: ARGV = {"203.0.113.7/32", "86400000", "login alice", "admin-api",
--                  "9f2c4e1a07b3d5c6", "604800000", "1000000"}
--   at TIME {1700000000, 123456} on an empty dataset
--   -> {"1", "1700086400123", "1700000000123", "9f2c4e1a07b3d5c6"}, and the event
--   epoch 9f2c4e1a07b3d5c6 seq 1 op upsert cidr 203.0.113.7/32
--   expires_at 1700086400123 note "login alice" actor admin-api ver 1
--   created_at 1700000000123 (a field later readers may use: a node keeps
--   note, actor and created_at to restore the list if Redis loses it)
-- An override: ARGV[1] "api/tenant-acme", ARGV[9] "0", ARGV[10] '["100/m"]'
--   (under {<prefix>:override}) -> the entry {"expires_at":0,...,"ver":1,"payload":["100/m"]}
--   and the same event with a `payload` field '["100/m"]'.
assert(#KEYS == 5 and #ARGV >= 8 and #ARGV <= 10, 'allow_upsert: expected 5 keys and 8 to 10 args')
local ttl = tonumber(ARGV[2])
assert(ttl and ttl >= 0, 'allow_upsert: ttl_ms must be a number >= 0')
return list_upsert.write(KEYS, {
  cidr = ARGV[1], ttl = ttl, note = ARGV[3], actor = ARGV[4], epoch = ARGV[5],
  retention = tonumber(ARGV[6]), cap = ARGV[7], deliberate = ARGV[8] == '1',
  exempt = ARGV[9] == '1', payload = ARGV[10] or '',
})
