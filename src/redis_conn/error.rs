//! What a Redis call can end in besides an answer, for every user of Redis
//! (the limiter, the allowlist, the follower, the CLI). The redis-rs error is
//! kept as the source; `kind` is what drives `on_redis_error`, the breakers
//! and the `tollgate_redis_errors_total{kind}` label.

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
    /// Redis answered with an error (a script bug, OOM, a wrong password...).
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

/// The three ways a call fails, as metrics and the breakers see them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Redis is slow: the call may have run.
    Timeout,
    /// Redis is away (or failing over).
    Unreachable,
    /// Redis answered, with an error or nonsense: this call only.
    Server,
}

impl Kind {
    /// The `kind` label of `tollgate_redis_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Timeout => "timeout",
            Kind::Unreachable => "unreachable",
            Kind::Server => "server",
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
            StoreError::Server(_) | StoreError::Reply(_) => Kind::Server,
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
        );
        if e.is_timeout() {
            StoreError::TimedOut(e)
        } else if failing_over
            || e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            // A node demoted to replica (READONLY), a cluster or master that is
            // down, a server still loading: Redis is away for us, as when unreachable.
            StoreError::Unreachable(e)
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
}
