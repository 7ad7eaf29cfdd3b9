//! What a Redis call can end in besides an answer, for every user of Redis
//! (the limiter, the allowlist, the follower, the CLI). The redis-rs error is
//! kept as the source; `kind` is what drives `on_redis_error`, the breakers
//! and the `tollgate_redis_errors_total{kind}` label.
//!
//! Redis answering with an error is one of three things, and each is handled
//! differently (README, "When things fail"):
//! - it will pass by itself (READONLY after a failover, BUSY while a script
//!   elsewhere runs, LOADING, CLUSTERDOWN...): `Unreachable`, the breaker
//!   opens and its probe tells when it is over;
//! - it needs an operator (OOM under `noeviction`, WRONGPASS/NOAUTH, NOPERM,
//!   MISCONF): `Refused`, the breaker opens in its refusing state, with one
//!   log line naming the `Refusal` each way and `tollgate_redis_refusing{class}`;
//! - anything else is this call's (a script bug): `Server`.

use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Our own deadline passed. The call may or may not have run: never
    /// retried blindly.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// redis-rs stopped waiting for the reply (its response timeout); as
    /// with `Timeout`, the call may have run.
    #[error("Redis did not answer in time: {0}")]
    TimedOut(#[source] RedisError),
    /// No connection, a dropped one, or a Redis that is failing over
    /// (READONLY, CLUSTERDOWN, MASTERDOWN, TRYAGAIN, LOADING).
    #[error("Redis unreachable: {0}")]
    Unreachable(#[source] RedisError),
    /// No connection was made yet (the breaker's probe makes it).
    #[error("Redis unreachable: not connected yet")]
    NotConnected,
    /// Redis answered with an error that only an operator can fix: every
    /// call would get it until then. (Redis's message never holds a password.)
    #[error("Redis refuses ({class}): {1}", class = .0.label())]
    Refused(Refusal, #[source] RedisError),
    /// Redis answered with an error about this call (a script bug...).
    #[error("Redis error: {0}")]
    Server(#[source] RedisError),
    /// Redis answered something this code cannot read (a script bug, or a
    /// key written by something else).
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
    /// The data moved under a read that needs it still (a restore, a trimmed
    /// stream); running it again will do.
    #[error("{0}")]
    Changed(String),
    /// What was asked needs Redis; this process has only its embedded store.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// The four ways a call fails, as metrics and the breakers see them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Redis is slow: the call may have run.
    Timeout,
    /// Redis is away (or failing over, or busy with a script).
    Unreachable,
    /// Redis answers every call with an error until an operator acts.
    Refused,
    /// Redis answered, with an error or nonsense: this call only.
    Server,
}

impl Kind {
    /// The `kind` label of `tollgate_redis_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Timeout => "timeout",
            Kind::Unreachable => "unreachable",
            Kind::Refused => "refused",
            Kind::Server => "server",
        }
    }
}

/// Why Redis refuses every call until an operator acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// OOM: `maxmemory` reached under `noeviction` (scripts that write fail).
    OutOfMemory,
    /// WRONGPASS or NOAUTH: the credentials no longer open a connection.
    Auth,
    /// NOPERM: the ACL user may not run the scripts (or touch the keys).
    NoPermission,
    /// MISCONF: snapshots fail and `stop-writes-on-bgsave-error` stops writes.
    Misconf,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::OutOfMemory,
        Refusal::Auth,
        Refusal::NoPermission,
        Refusal::Misconf,
    ];

    /// The `class` label of `tollgate_redis_refusing`, and the word in logs.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::OutOfMemory => "oom",
            Refusal::Auth => "auth",
            Refusal::NoPermission => "noperm",
            Refusal::Misconf => "misconf",
        }
    }

    /// Redis's error code (`OOM`, `WRONGPASS`...) as a refusal, if it is one.
    fn of(e: &RedisError) -> Option<Refusal> {
        if e.kind() == ErrorKind::AuthenticationFailed {
            return Some(Refusal::Auth);
        }
        match e.code()? {
            "OOM" => Some(Refusal::OutOfMemory),
            "WRONGPASS" | "NOAUTH" => Some(Refusal::Auth),
            "NOPERM" => Some(Refusal::NoPermission),
            "MISCONF" => Some(Refusal::Misconf),
            _ => None,
        }
    }
}

impl StoreError {
    pub fn kind(&self) -> Kind {
        match self {
            StoreError::Timeout(_) | StoreError::TimedOut(_) => Kind::Timeout,
            // No Redis configured is Redis away, for this process.
            StoreError::Unreachable(_)
            | StoreError::NotConnected
            | StoreError::Changed(_)
            | StoreError::Unsupported(_) => Kind::Unreachable,
            StoreError::Refused(..) => Kind::Refused,
            StoreError::Server(_) | StoreError::Reply(_) => Kind::Server,
        }
    }

    /// What an operator must fix before Redis answers calls again, if that is it.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            StoreError::Refused(r, _) => Some(*r),
            _ => None,
        }
    }

    /// Redis is slow or away (as opposed to answering with an error): worth
    /// tripping a breaker, or asking again later.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), Kind::Timeout | Kind::Unreachable)
    }
}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        let failing_over = matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::BusyLoading
            )
        ) || e.code() == Some("BUSY");
        if e.is_timeout() {
            StoreError::TimedOut(e)
        } else if failing_over
            || e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            // A node demoted to replica (READONLY), a cluster or master that is
            // down, a server still loading or busy with a script: Redis is away
            // for us, as when unreachable.
            StoreError::Unreachable(e)
        } else if let Some(refusal) = Refusal::of(&e) {
            StoreError::Refused(refusal, e)
        } else {
            StoreError::Server(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_rs_timeout_says_it_timed_out_and_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "response timed out");
        let e = StoreError::from(RedisError::from(io));
        assert_eq!(e.kind(), Kind::Timeout);
        let text = e.to_string();
        assert!(text.starts_with("Redis did not answer in time: "), "{text}");
        assert!(!text.contains("0ns"), "{text}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn a_refused_connection_is_unreachable_and_a_script_error_is_the_server_s() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            StoreError::from(RedisError::from(refused)).kind(),
            Kind::Unreachable
        );
        let script = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR user_script:1: oops",
        ));
        let e = StoreError::from(script);
        assert_eq!(e.kind(), Kind::Server);
        assert!(!e.is_transient());
    }

    fn answered(code: &str, detail: &str) -> StoreError {
        // As redis-rs parses an error reply: the code, then the rest.
        let reply = format!("-{code} {detail}\r\n");
        match redis::parse_redis_value(reply.as_bytes()) {
            Ok(redis::Value::ServerError(e)) => StoreError::from(RedisError::from(e)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_needs_an_operator_is_refused_and_names_its_class() {
        let cases = [
            ("OOM", "command not allowed when used memory > 'maxmemory'. script: 89, on @user_script:1.", Refusal::OutOfMemory),
            ("WRONGPASS", "invalid username-password pair or user is disabled.", Refusal::Auth),
            ("NOAUTH", "Authentication required.", Refusal::Auth),
            ("NOPERM", "this user has no permissions to run the 'evalsha' command", Refusal::NoPermission),
            ("MISCONF", "Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.", Refusal::Misconf),
        ];
        for (code, detail, refusal) in cases {
            let e = answered(code, detail);
            assert_eq!(e.kind(), Kind::Refused, "{code}");
            assert_eq!(e.refusal(), Some(refusal), "{code}");
            assert!(!e.is_transient(), "{code}");
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("Redis refuses ({}): ", refusal.label())),
                "{text}"
            );
            assert!(text.contains(detail.split(' ').next().unwrap()), "{text}");
        }
    }

    #[test]
    fn what_passes_by_itself_is_unreachable() {
        for code in [
            "READONLY",
            "BUSY",
            "LOADING",
            "MASTERDOWN",
            "CLUSTERDOWN",
            "TRYAGAIN",
        ] {
            let e = answered(code, "whatever");
            assert_eq!(e.kind(), Kind::Unreachable, "{code}");
            assert!(e.is_transient(), "{code}");
            assert_eq!(e.refusal(), None, "{code}");
        }
    }
}

#[cfg(test)]
impl StoreError {
    /// A refusal as Redis sends it (`-OOM nope`), for the breakers' tests.
    pub(crate) fn refused_for_test(code: &str) -> StoreError {
        let reply = format!("-{code} nope\r\n");
        match redis::parse_redis_value(reply.as_bytes()) {
            Ok(redis::Value::ServerError(e)) => StoreError::from(redis::RedisError::from(e)),
            other => panic!("{other:?}"),
        }
    }
}
