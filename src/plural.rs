//! Counted nouns in messages: `1 entry`, `2 entries`, never `1 entries`.

/// `n` and the noun in the form `n` takes: `count(1, "request", "requests")`
/// is `1 request`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", noun(n, one, many))
}

/// The noun alone, for tables that align the number themselves.
pub fn noun<'w>(n: u64, one: &'w str, many: &'w str) -> &'w str {
    if n == 1 {
        one
    } else {
        many
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(super::count(1, "entry", "entries"), "1 entry");
        assert_eq!(super::count(0, "entry", "entries"), "0 entries");
        assert_eq!(super::count(2, "request", "requests"), "2 requests");
    }
}
