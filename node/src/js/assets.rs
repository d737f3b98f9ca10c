//! A project's static files (`serve` in partykit.json), held in memory: they answer
//! requests outside rooms before the main party's `onFetch` does, as PartyKit serves them,
//! and `assets.fetch(path)` in a party's code.

use crate::message::{Request, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use std::collections::HashMap;

/// The files of a project's served directory.
pub struct StaticAssets {
    files: HashMap<String, Asset>,
    /// A page navigation that names no file gets `index.html` (`serve.singlePageApp`).
    single_page_app: bool,
    cache_control: HeaderValue,
}

struct Asset {
    body: Bytes,
    content_type: HeaderValue,
    etag: HeaderValue,
}

impl std::fmt::Debug for StaticAssets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticAssets")
            .field("files", &self.files.len())
            .field("single_page_app", &self.single_page_app)
            .finish()
    }
}

impl StaticAssets {
    /// `files`: each file's path under the served directory (`/` between its parts, none
    /// in front) and its content. `browser_ttl`: how many seconds a browser may use a file
    /// without asking again; without one it asks each time, and an unchanged file is
    /// answered 304 by its ETag.
    pub fn new(
        files: impl IntoIterator<Item = (String, Bytes)>,
        single_page_app: bool,
        browser_ttl: Option<u64>,
    ) -> Self {
        let files = files
            .into_iter()
            .map(|(path, body)| {
                let asset = Asset {
                    content_type: content_type(&path),
                    etag: etag(&body),
                    body,
                };
                (path, asset)
            })
            .collect();
        let cache_control = match browser_ttl {
            Some(secs) => HeaderValue::from_str(&format!("public, max-age={secs}"))
                .expect("digits are a header value"),
            None => HeaderValue::from_static("no-cache"),
        };
        Self {
            files,
            single_page_app,
            cache_control,
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The answer to a request outside rooms when a file answers it: a GET or HEAD of the
    /// file's path (`/` is `/index.html`, as is any path ending in `/` in its directory),
    /// or in single-page mode a page navigation (`Sec-Fetch-Mode: navigate`) of a path
    /// with no file, which gets `index.html`.
    pub fn answer(&self, req: &Request) -> Option<Response> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return None;
        }
        let path = file_path(req.uri().path())?;
        let asset = self.files.get(&path).or_else(|| {
            let navigates = req
                .headers()
                .get("sec-fetch-mode")
                .is_some_and(|m| m.as_bytes().eq_ignore_ascii_case(b"navigate"));
            (self.single_page_app && navigates)
                .then(|| self.files.get("index.html"))
                .flatten()
        })?;
        metrics::counter!("conclave_static_files_served_total").increment(1);
        Some(self.respond(asset, StatusCode::OK, req.method(), req.headers()))
    }

    /// `404.html`, answered with status 404, for a request outside rooms that nothing else
    /// answered (as PartyKit does).
    pub fn not_found(&self, req: &Request) -> Option<Response> {
        let asset = self.files.get("404.html")?;
        Some(self.respond(
            asset,
            StatusCode::NOT_FOUND,
            req.method(),
            &HeaderMap::new(),
        ))
    }

    /// `assets.fetch(path)` in a party: the file at `path` (from `/`; a query is ignored),
    /// as a GET of it is answered; `None` when no file is there.
    pub fn fetch(&self, path: &str) -> Option<Response> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let asset = self.files.get(&file_path(path)?)?;
        Some(self.respond(asset, StatusCode::OK, &Method::GET, &HeaderMap::new()))
    }

    fn respond(
        &self,
        asset: &Asset,
        status: StatusCode,
        method: &Method,
        asked: &HeaderMap,
    ) -> Response {
        let unchanged = status == StatusCode::OK
            && asked
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .any(|v| matches_etag(v, &asset.etag));
        let (status, body) = if unchanged {
            (StatusCode::NOT_MODIFIED, Bytes::new())
        } else if method == Method::HEAD {
            (status, Bytes::new())
        } else {
            (status, asset.body.clone())
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::ETAG, asset.etag.clone());
        h.insert(header::CACHE_CONTROL, self.cache_control.clone());
        if self.single_page_app {
            // A path with no file is index.html to a page navigation and not to a script.
            h.insert(header::VARY, HeaderValue::from_static("sec-fetch-mode"));
        }
        if !unchanged {
            h.insert(header::CONTENT_TYPE, asset.content_type.clone());
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
        }
        resp
    }
}

/// The file a URL path names: percent-decoded, `index.html` for a path ending in `/`,
/// without the leading `/`. `None` for a path that is not UTF-8 once decoded.
fn file_path(path: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    let mut file = decoded.strip_prefix('/').unwrap_or(&decoded).to_string();
    if file.is_empty() || file.ends_with('/') {
        file.push_str("index.html");
    }
    Some(file)
}

fn content_type(path: &str) -> HeaderValue {
    let guessed = mime_guess::from_path(path).first_or_octet_stream();
    let textual = guessed.type_() == mime_guess::mime::TEXT
        || matches!(
            guessed.essence_str(),
            "application/javascript" | "application/json" | "image/svg+xml"
        );
    let value = if textual && guessed.get_param("charset").is_none() {
        format!("{}; charset=utf-8", guessed.essence_str())
    } else {
        guessed.to_string()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// A strong ETag of the content: the first 16 hex digits of its SHA-256.
fn etag(body: &[u8]) -> HeaderValue {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex digits are a header value")
}

/// Whether an `If-None-Match` value names `etag` (or is `*`); weak tags compare as
/// strong ones for this (RFC 9110's weak comparison, which `If-None-Match` uses).
fn matches_etag(value: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let ours = etag.to_str().unwrap_or_default();
    value.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag == ours
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assets(spa: bool) -> StaticAssets {
        StaticAssets::new(
            [
                (
                    "index.html".to_string(),
                    Bytes::from_static(b"<h1>home</h1>"),
                ),
                ("dist/client.js".to_string(), Bytes::from_static(b"let x;")),
                ("docs/index.html".to_string(), Bytes::from_static(b"docs")),
                ("a b.txt".to_string(), Bytes::from_static(b"spaced")),
                ("404.html".to_string(), Bytes::from_static(b"gone")),
            ],
            spa,
            None,
        )
    }

    fn get(path: &str) -> http::request::Builder {
        http::Request::builder().method("GET").uri(path)
    }

    #[test]
    fn files_are_found_by_their_path_with_index_html_for_directories() {
        let a = assets(false);
        let root = a.answer(&get("/").body(Bytes::new()).unwrap()).unwrap();
        assert_eq!(root.body().as_ref(), b"<h1>home</h1>");
        assert_eq!(root.headers()["content-type"], "text/html; charset=utf-8");
        let js = a.answer(&get("/dist/client.js?v=2").body(Bytes::new()).unwrap());
        let js = js.unwrap();
        assert!(js.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript"));
        assert_eq!(js.headers()["content-length"], "6");
        let docs = a
            .answer(&get("/docs/").body(Bytes::new()).unwrap())
            .unwrap();
        assert_eq!(docs.body().as_ref(), b"docs");
        // As PartyKit: a directory without its slash is no file.
        assert!(a
            .answer(&get("/docs").body(Bytes::new()).unwrap())
            .is_none());
        let spaced = a.answer(&get("/a%20b.txt").body(Bytes::new()).unwrap());
        assert_eq!(spaced.unwrap().body().as_ref(), b"spaced");
        let post = http::Request::builder()
            .method("POST")
            .uri("/")
            .body(Bytes::new())
            .unwrap();
        assert!(a.answer(&post).is_none());
    }

    /// Files are looked up by name, never opened by path: what a request spells with `..`
    /// names no file (a guard for whoever changes that).
    #[test]
    fn a_path_outside_the_directory_names_no_file() {
        let a = assets(false);
        for path in [
            "/../index.html",
            "/%2e%2e/index.html",
            "/dist/../index.html",
        ] {
            let req = get(path).body(Bytes::new()).unwrap();
            assert!(a.answer(&req).is_none(), "{path}");
        }
    }

    #[test]
    fn head_has_the_headers_without_the_body() {
        let a = assets(false);
        let req = http::Request::builder()
            .method("HEAD")
            .uri("/")
            .body(Bytes::new())
            .unwrap();
        let resp = a.answer(&req).unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.body().is_empty());
        assert_eq!(resp.headers()["content-length"], "13");
    }

    #[test]
    fn an_unchanged_file_is_answered_304_by_its_etag() {
        let a = assets(false);
        let first = a.answer(&get("/").body(Bytes::new()).unwrap()).unwrap();
        let tag = first.headers()["etag"].clone();
        assert_eq!(first.headers()["cache-control"], "no-cache");
        let again = get("/")
            .header(
                "if-none-match",
                format!("\"other\", W/{}", tag.to_str().unwrap()),
            )
            .body(Bytes::new())
            .unwrap();
        let resp = a.answer(&again).unwrap();
        assert_eq!(resp.status(), 304);
        assert!(resp.body().is_empty());
        let changed = get("/")
            .header("if-none-match", "\"other\"")
            .body(Bytes::new())
            .unwrap();
        assert_eq!(a.answer(&changed).unwrap().status(), 200);
    }

    #[test]
    fn a_single_page_app_answers_navigations_with_its_index() {
        let navigate = |a: &StaticAssets, path: &str| {
            a.answer(
                &get(path)
                    .header("sec-fetch-mode", "navigate")
                    .body(Bytes::new())
                    .unwrap(),
            )
        };
        let spa = assets(true);
        let page = navigate(&spa, "/rooms/42").unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["vary"], "sec-fetch-mode");
        assert_eq!(page.body().as_ref(), b"<h1>home</h1>");
        // Not a navigation (a script's fetch): no file, no page.
        assert!(spa
            .answer(&get("/rooms/42").body(Bytes::new()).unwrap())
            .is_none());
        assert!(navigate(&assets(false), "/rooms/42").is_none());
    }

    #[test]
    fn not_found_is_the_404_page_and_fetch_takes_a_path() {
        let a = assets(false);
        let req = get("/nothing").body(Bytes::new()).unwrap();
        let resp = a.not_found(&req).unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.body().as_ref(), b"gone");
        assert_eq!(
            a.fetch("/dist/client.js?x").unwrap().body().as_ref(),
            b"let x;"
        );
        assert!(a.fetch("/missing.png").is_none());
        let browser_cached = StaticAssets::new([], false, Some(60));
        assert_eq!(browser_cached.cache_control, "public, max-age=60");
    }
}
