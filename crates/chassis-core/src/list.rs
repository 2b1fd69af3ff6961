//! Settings that hold a comma-separated list (peer base URLs, a NATS cluster's URLs).

/// The items of a comma-separated list, trimmed, empty ones left out.
pub fn comma_separated(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn items_are_trimmed_and_empty_ones_dropped() {
        let items: Vec<_> = super::comma_separated(" a, b ,,c,").collect();
        assert_eq!(items, ["a", "b", "c"]);
    }
}
