//! A connection made on first use and shared by every caller until it is
//! forgotten (after a failure behind a Sentinel, or a reload that changed
//! credentials or TLS files): the next call then dials afresh, with the
//! endpoint's current settings and the current master.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::{Endpoint, RedisConn, StoreError};

pub struct SharedConn {
    endpoint: Endpoint,
    /// Bounds the dial, and each command on the connection.
    timeout: Duration,
    conn: ArcSwapOption<RedisConn>,
}

impl SharedConn {
    /// Nothing is dialled until the first `get`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> SharedConn {
        SharedConn {
            endpoint,
            timeout,
            conn: ArcSwapOption::empty(),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The connection, dialled now if there is none.
    pub async fn get(&self) -> Result<RedisConn, StoreError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let conn = tokio::time::timeout(self.timeout, self.endpoint.connect(self.timeout))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(StoreError::from)?;
        self.conn.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    /// The next `get` dials afresh.
    pub fn forget(&self) {
        self.conn.store(None);
    }
}
