"""The allowlist's Redis layout, for the benchmarks that fill Redis directly
(scripts/bench_allowlist.py) or drive its scripts (scripts/bench.py).

Key names are those src/keys.rs builds (`KeySpace::allowlist`): the four keys
share the `{<prefix>:allow}` hash tag. The fill writes entries the way the
allowlist stores them (a JSON value per CIDR in `entries`, a score per
expiring CIDR in `exp`, `meta` of a dataset with no events yet): the same
fill as tests/allowlist_scale.rs's `populate`, which names its keys through
tollgate::keys.
"""

ENTRY = '{"expires_at":%d,"note":"login","created_at":1,"actor":"%s","ver":1}'


def entry_cidr(i, v6=False):
    """The i-th distinct entry the benchmarks store: an IPv4 /32 from
    11.0.0.0 on, or an IPv6 /128 in 2001:db8::/32."""
    if v6:
        return f"2001:db8:{(i >> 16) & 0xffff:x}:{i & 0xffff:x}::1/128"
    a = 0x0B000000 + i
    return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/32"


def hash_tag(prefix, tag="allow"):
    """`{<prefix>:allow}`: what every allowlist key (and a SLOWLOG line on one)
    contains; `tag="deny"`: the denylist's (`KeySpace::list`)."""
    return f"{{{prefix}:{tag}}}"


def allow_key(prefix, name, tag="allow"):
    """One of `meta`, `entries`, `exp`, `events` (of the denylist with `tag="deny"`)."""
    return f"{prefix}:{hash_tag(prefix, tag)}:{name}"


def allow_keys(prefix):
    """The four keys in the order the lua/allow_*.lua scripts take them."""
    return [allow_key(prefix, n) for n in ("meta", "entries", "exp", "events")]


# An override's entry (`tag="override"`, members `rule/key`): the IP lists'
# fields, then its limits as the payload (src/overrides).
OVERRIDE_ENTRY = '{"expires_at":%d,"note":"tenant","created_at":1,"actor":"%s","ver":1,"payload":["100/m"]}'


def fill_commands(prefix, cidrs, expires, epoch="bench", actor="bench", tag="allow", entry=ENTRY):
    """Commands (lists of arguments) that store `cidrs`, the i-th expiring at
    `expires(i)` (ms, Redis time; 0: never), 1 000 to an HSET/ZADD, then the
    `meta` of epoch `epoch` at seq 0. `tag="deny"` fills the denylist;
    `tag="override", entry=OVERRIDE_ENTRY` the overrides (members `rule/key`)."""
    entries, exp = allow_key(prefix, "entries", tag), allow_key(prefix, "exp", tag)
    cmds, h, z = [], ["HSET", entries], ["ZADD", exp]
    for i, cidr in enumerate(cidrs):
        e = expires(i)
        h += [cidr, entry % (e, actor)]
        if e:
            z += [e, cidr]
        if len(h) >= 2 + 2000:
            cmds.append(h)
            h = ["HSET", entries]
        if len(z) >= 2 + 2000:
            cmds.append(z)
            z = ["ZADD", exp]
    cmds += [c for c in (h, z) if len(c) > 2]
    cmds.append(["HSET", allow_key(prefix, "meta", tag), "epoch", epoch, "seq", "0", "last_id", "0-0"])
    return cmds
