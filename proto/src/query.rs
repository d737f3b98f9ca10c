//! Query strings, read the way browsers write them (`URLSearchParams`: `+` is a space).

/// The first value of `name` in a URL or bare query string, percent-decoded.
pub fn query_param(url_or_query: &str, name: &str) -> Option<String> {
    let query = url_or_query
        .split_once('?')
        .map_or(url_or_query, |(_, q)| q);
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != name {
            return None;
        }
        let v = v.replace('+', " ");
        Some(
            percent_encoding::percent_decode_str(&v)
                .decode_utf8_lossy()
                .into_owned(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn first_value_decoded() {
        assert_eq!(
            query_param("http://h/p?_pk=a&name=J%C3%BCrg+X", "name").as_deref(),
            Some("Jürg X")
        );
        assert_eq!(
            query_param("a=1&_pk=x%20y&_pk=z", "_pk").as_deref(),
            Some("x y")
        );
        assert_eq!(query_param("id=a%2Bb", "id").as_deref(), Some("a+b"));
        assert_eq!(
            query_param("http://h/p?_pk=a#frag", "_pk").as_deref(),
            Some("a")
        );
        assert_eq!(query_param("http://h/p", "_pk"), None);
        assert_eq!(
            query_param("token=a/b.c", "token").as_deref(),
            Some("a/b.c")
        );
        assert_eq!(query_param("http://h/p?_pk=a", "name"), None);
    }
}
