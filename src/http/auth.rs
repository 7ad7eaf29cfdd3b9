//! Bearer-token check for every admin `/v1/*` route.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::response::ApiError;
use crate::app::App;

/// `Authorization: Bearer <token>`, compared in constant time; else 401.
/// With no token configured the API is open: `server::run` allows that only
/// on a loopback admin address.
pub async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.config.server.admin_token {
        let presented = req
            .headers()
            .get("authorization")
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        if !token.matches(presented) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}
