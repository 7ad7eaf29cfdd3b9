-- deny_ban: one limited answer of a banning rule for one address (src/ban.rs):
-- count it, and when it makes an offence, deny the address through
-- lua/list_upsert.lua (concatenated before this file), the write every deny
-- entry goes through. One atomic call, so however many replicas see the
-- offending requests at once, an offence bans exactly once.
--
-- KEYS[1..5] the denylist's meta, entries, exp, events, lost (list_upsert.lua)
-- KEYS[6]  count     string: limited answers in the current window; expires
--                    `within` after the first of them
-- KEYS[7]  offences  string: offences so far; expires `remember` after the last
--          All seven share the {<prefix>:deny} hash tag.
-- ARGV[1]  cidr, canonical: the address, or its IPv6 network
-- ARGV[2]  after: limited answers that make an offence (>= 1)
-- ARGV[3]  within, ms          ARGV[4]  for (the first ban), ms
-- ARGV[5]  factor (>= 1)       ARGV[6]  max, ms (>= for)
-- ARGV[7]  remember, ms
-- ARGV[8]  note, without the offence ("10 limited in 10m by rule login")
-- ARGV[9]  actor ("rule:login"; "shadow:login" when ARGV[13] is "1")
-- ARGV[10] epoch to create if the denylist has none yet
-- ARGV[11] event retention, ms  ARGV[12] event cap (as allow_upsert)
-- ARGV[13] "1": shadow: count and say what would be banned, write no entry
-- Returns  {"denied"}: a live entry holds exactly this cidr (nothing counted);
--          {"counted", n}: n of `after` so far;
--          {"banned", seq, expires_at, created_at, offence, ttl_ms, note};
--          {"shadow", offence, ttl_ms, note}: what would have been banned;
--          or list_upsert's {"lost", …} reply: the denylist was lost, nothing
--          is counted or written.
--
-- Example: after 2, within 600000, for 900000, factor 4, max 604800000,
--   remember 2592000000; a fresh address: {"counted", "1"}, then
--   {"banned", "7", "<now+900000>", "<now>", "1", "900000",
--    "2 limited in 10m by rule login; offence 1"}; the same address, after
--   that ban ended, two limited answers later: offence 2, ttl_ms 3600000.
assert(#KEYS == 7 and #ARGV == 13, 'deny_ban: expected 7 keys and 13 args')
local cidr = ARGV[1]
local after, within, first = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local factor, max, remember = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
assert(after >= 1 and within >= 1 and first >= 1 and factor >= 1 and max >= first
  and remember >= 1, 'deny_ban: bad ban settings')
local list = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}
local shadow = ARGV[13] == '1'

-- Already denied: not banned again (no extension, no second event). The
-- entry's JSON starts with its expiry (src/allowlist/stored_json.rs).
local json = redis.call('HGET', KEYS[2], cidr)
if json then
  local exp = tonumber(string.match(json, '^{"expires_at":(%d+)'))
  if exp == 0 or exp > list_upsert.now() then return {'denied'} end
end
local lost = list_upsert.lost(list, false)
if lost then return lost end

local n = redis.call('INCR', KEYS[6])
if n == 1 then redis.call('PEXPIRE', KEYS[6], within) end
if n < after then return {'counted', tostring(n)} end
redis.call('DEL', KEYS[6])

local offence = redis.call('INCR', KEYS[7])
redis.call('PEXPIRE', KEYS[7], remember)
local ttl = first
for _ = 2, offence do
  ttl = ttl * factor
  if ttl >= max then break end
end
if ttl > max then ttl = max end
local ttl_s = string.format('%.0f', ttl)
local note = ARGV[8] .. '; offence ' .. offence
if shadow then return {'shadow', tostring(offence), ttl_s, note} end

local r = list_upsert.write(list, {
  cidr = cidr, ttl = ttl, note = note, actor = ARGV[9], epoch = ARGV[10],
  retention = tonumber(ARGV[11]), cap = ARGV[12], deliberate = false,
})
if r[1] == 'lost' then return r end
return {'banned', r[1], r[2], r[3], tostring(offence), ttl_s, note}
