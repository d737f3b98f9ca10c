//! Query strings, read the way browsers write them (`URLSearchParams`: `+` is a space).

/// The first value of `name` in a URL or bare query string, percent-decoded.
pub fn query_param(url_or_query: &str, name: &str) -> Option<String> {
    let query = url_or_query
        .split_once('?')
        .map_or(url_or_query, |(_, q)| q);
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').find_map(|pair| {
        let value = match pair.strip_prefix(name)? {
            "" => "",
            rest => rest.strip_prefix('=')?,
        };
        Some(form_decoded(value))
    })
}

/// A query value as form encoding writes it (`+` for a space, `%XX` escapes), decoded; a
/// value with neither is copied as it is (most are: ids, tokens, tags).
fn form_decoded(value: &str) -> String {
    if !value.bytes().any(|b| b == b'+' || b == b'%') {
        return value.to_string();
    }
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
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
        // A longer name that starts with the one asked for is another parameter.
        assert_eq!(query_param("_pkx=1&_pk=2", "_pk").as_deref(), Some("2"));
        assert_eq!(query_param("flag&_pk=2", "flag").as_deref(), Some(""));
        assert_eq!(query_param("a=%zz+1", "a").as_deref(), Some("%zz 1"));
    }
}
