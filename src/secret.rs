//! A value that must never reach a log line (admin token, Redis password).

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself; call only where it is compared or sent.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so response timing does not leak the token.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A secret as a file or a variable holds it, with one trailing newline
/// (`\n` or `\r\n`) dropped: what `echo`, editors and `$(cat file)` leave.
/// Only one: a second newline is part of the text, and refused or kept by
/// the caller. `redis.password_file` and the admin token both read this way.
pub fn strip_one_newline(text: &str) -> &str {
    text.strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text)
}

/// Shortest admin token accepted, in bytes (`openssl rand -hex 16` gives 32).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// An admin token refused by [`admin_token`]: `TOLLGATE_ADMIN_TOKEN: is 6 bytes; …`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct AdminTokenError {
    /// The variable that held it (`server.admin_token_env`).
    pub var: String,
    pub problem: TokenProblem,
}

/// What is wrong with an admin token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("is not valid UTF-8")]
    NotUtf8,
    #[error("the admin token starts or ends with white space (one trailing newline is dropped; more is refused, as no client would send it)")]
    WhiteSpace,
    #[error("the admin token is {0} bytes; at least {MIN_ADMIN_TOKEN_BYTES} are needed (e.g. `openssl rand -hex 16`)")]
    TooShort(usize),
}

/// The admin token held by variable `var`: one trailing newline dropped,
/// then no surrounding white space and at least [`MIN_ADMIN_TOKEN_BYTES`].
/// `Ok(None)`: unset or empty (the admin API is open, loopback only).
pub fn admin_token(
    var: &str,
    value: Option<std::ffi::OsString>,
) -> Result<Option<Secret>, AdminTokenError> {
    let refuse = |problem| AdminTokenError {
        var: var.to_string(),
        problem,
    };
    let Some(value) = value else { return Ok(None) };
    let value = value
        .into_string()
        .map_err(|_| refuse(TokenProblem::NotUtf8))?;
    let token = strip_one_newline(&value);
    if token.is_empty() {
        return Ok(None);
    }
    if token.trim() != token {
        return Err(refuse(TokenProblem::WhiteSpace));
    }
    if token.len() < MIN_ADMIN_TOKEN_BYTES {
        return Err(refuse(TokenProblem::TooShort(token.len())));
    }
    Ok(Some(Secret::new(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(v: &str) -> Result<Option<String>, AdminTokenError> {
        admin_token("TOLLGATE_ADMIN_TOKEN", Some(v.into()))
            .map(|t| t.map(|s| s.expose().to_string()))
    }

    #[test]
    fn one_trailing_newline_is_dropped_like_a_password_file() {
        assert_eq!(strip_one_newline("abc\n"), "abc");
        assert_eq!(strip_one_newline("abc\r\n"), "abc");
        assert_eq!(strip_one_newline("abc\n\n"), "abc\n");
        assert_eq!(strip_one_newline("abc"), "abc");
        let good = "0123456789abcdef";
        assert_eq!(token(&format!("{good}\n")).unwrap().as_deref(), Some(good));
        assert_eq!(token(good).unwrap().as_deref(), Some(good));
    }

    #[test]
    fn white_space_and_short_tokens_are_refused_naming_the_variable() {
        for bad in [
            " 0123456789abcdef",
            "0123456789abcdef \n",
            "0123456789abcdef\n\n",
            "\t0123456789abcdef",
        ] {
            let e = token(bad).unwrap_err();
            assert_eq!(e.problem, TokenProblem::WhiteSpace, "{bad:?}: {e}");
            assert!(e.to_string().starts_with("TOLLGATE_ADMIN_TOKEN: "), "{e}");
        }
        let e = token("abc123\n").unwrap_err();
        assert_eq!(e.problem, TokenProblem::TooShort(6));
        assert!(e.to_string().contains("at least 16"), "{e}");
        assert_eq!(token("").unwrap(), None, "empty is unset");
        assert_eq!(token("\n").unwrap(), None);
        assert_eq!(admin_token("V", None).unwrap(), None);
    }
}
