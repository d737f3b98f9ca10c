//! The party's code outside any room: the static checks (`onBeforeConnect`,
//! `onBeforeRequest`) and `onFetch`, each run on a worker as an event without a room.

use super::*;

impl JsPartyFactory {
    /// Runs a check outside any room on one of the workers.
    fn check(&self, event: Event) -> BoxFuture<'static, Result<Outcome, Failure>> {
        let engine = self.engine.clone();
        let v = self.current();
        let fetcher = self.fetcher.get().cloned();
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let job = Job {
                party: v.party,
                instance: engine.next_instance(),
                event,
                lease: None,
                fetcher,
                reply,
            };
            if !engine.send(engine.pick_worker(), Command::Run(Box::new(job))) {
                return Err(Failure::Threw("the JavaScript engine stopped".into()));
            }
            match rx.await {
                Ok((_, outcome)) => outcome,
                Err(_) => Err(Failure::Threw(
                    "the JavaScript worker dropped the check".into(),
                )),
            }
        })
    }

    pub(super) fn connect_check(
        &self,
        req: ConnectCheck,
    ) -> Option<BoxFuture<'static, Result<ConnectCheck, Response>>> {
        if !self.current().traits.on_before_connect {
            return None;
        }
        let url = absolute_url(&req.uri.parse().unwrap_or_default(), &req.headers);
        let pending = self.check(Event::BeforeConnect {
            room: req.room.clone(),
            url,
            headers: flat_headers(Some(&req.headers)),
        });
        Some(Box::pin(async move {
            match pending.await {
                Ok(Outcome::Proceed(p)) if p.is_unchanged() => Ok(req),
                Ok(Outcome::Proceed(p)) => Ok(ConnectCheck {
                    // Connections keep the absolute URL the client connected to.
                    uri: if req.uri.starts_with('/') {
                        path_of(&p.url).unwrap_or(req.uri.clone())
                    } else {
                        p.url
                    },
                    headers: header_map(&p.headers),
                    ..req
                }),
                Ok(Outcome::Response(r)) => response_of(r)
                    .map_err(|_| thrown(&Failure::Threw("bad response".into())))
                    .and_then(Err),
                Ok(_) => Ok(req),
                Err(e) => Err(thrown(&e)),
            }
        }))
    }

    pub(super) fn request_check(
        &self,
        room: &str,
        req: Request,
    ) -> Option<BoxFuture<'static, Result<Request, Response>>> {
        if !self.current().traits.on_before_request {
            return None;
        }
        let (parts, body) = req.into_parts();
        let pending = self.check(Event::BeforeRequest {
            room: room.to_string(),
            request: static_request(&parts, &body),
        });
        Some(Box::pin(async move {
            let original = http::Request::from_parts(parts, body);
            match pending.await {
                Ok(Outcome::Proceed(p)) if p.is_unchanged() => Ok(original),
                Ok(Outcome::Proceed(p)) => rebuilt_request(p).or(Ok(original)),
                Ok(Outcome::Response(r)) => Err(response_of(r)
                    .unwrap_or_else(|e| thrown(&Failure::Threw(e.to_string().into())))),
                Ok(_) => Ok(original),
                Err(e) => Err(thrown(&e)),
            }
        }))
    }

    /// One tick of a cron trigger: the static `onCron`, outside any room.
    pub(super) fn cron(
        &self,
        tick: crate::CronTick,
    ) -> Option<BoxFuture<'static, Result<(), String>>> {
        if !self.current().traits.on_cron {
            return None;
        }
        let pending = self.check(Event::Cron(tick));
        Some(Box::pin(async move {
            match pending.await {
                Ok(_) => Ok(()),
                Err(Failure::Threw(error)) => Err(error.trace),
                Err(e) => Err(e.to_string()),
            }
        }))
    }

    /// `/__scheduled__?cron=NAME` in `conclave dev`: runs cron NAME's `onCron` at once
    /// and answers when it is done, as PartyKit's dev server does (a name with no cron
    /// runs with the schedule `* * * * *`).
    fn scheduled_route(&self, req: &Request) -> Option<BoxFuture<'static, Response>> {
        let v = self.current();
        if !self.engine.config().scheduled_route
            || !v.traits.on_cron
            || req.uri().path() != "/__scheduled__"
        {
            return None;
        }
        let name = req
            .uri()
            .query()
            .and_then(|q| conclave_proto::query_param(q, "cron"))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let pattern = v
            .crons
            .iter()
            .find(|c| c.name == name)
            .map_or_else(|| "* * * * *".to_string(), |c| c.pattern.clone());
        let tick = crate::CronTick {
            name: name.clone(),
            pattern: pattern.clone(),
            scheduled_ms: crate::time::now_ms() as f64,
        };
        let run = self.cron(tick)?;
        Some(Box::pin(async move {
            match run.await {
                Ok(()) => answer(http::StatusCode::OK, format!("ran cron {name}: {pattern}")),
                Err(e) => {
                    warn!(cron = %name, error = %e, "onCron threw");
                    answer(http::StatusCode::INTERNAL_SERVER_ERROR, e)
                }
            }
        }))
    }

    /// A request outside any room, answered as PartyKit answers it: by a static file
    /// (`serve`: a GET or HEAD of its path), else by the main party's static `onFetch`,
    /// else by the project's `404.html`; `None` when there is none of them (the node's 404).
    /// A throw in `onFetch` answers 500 with the error's message (PartyKit does not take
    /// the status from its `code` here, as it does for onRequest).
    pub(super) fn outside_rooms_fetch(&self, req: Request) -> Option<BoxFuture<'static, Response>> {
        if let Some(ran) = self.scheduled_route(&req) {
            return Some(ran);
        }
        let v = self.current();
        let assets = v.assets.as_deref();
        if let Some(file) = assets.and_then(|a| a.answer(&req)) {
            return Some(Box::pin(std::future::ready(file)));
        }
        let not_found_page = assets.and_then(|a| a.not_found(&req));
        if !v.traits.on_fetch {
            return not_found_page.map(|page| Box::pin(std::future::ready(page)) as BoxFuture<_>);
        }
        let (parts, body) = req.into_parts();
        let pending = self.check(Event::Fetch(static_request(&parts, &body)));
        Some(Box::pin(async move {
            let failed = |body: String| answer(http::StatusCode::INTERNAL_SERVER_ERROR, body);
            match pending.await {
                Ok(Outcome::Response(r)) => {
                    response_of(r).unwrap_or_else(|e| failed(e.to_string()))
                }
                Ok(_) => not_found_page
                    .unwrap_or_else(|| answer(http::StatusCode::NOT_FOUND, "Not found".into())),
                Err(Failure::Threw(error)) => {
                    warn!(error = %error.trace, "onFetch threw");
                    failed(thrown_message(error))
                }
                Err(e) => failed(e.to_string()),
            }
        }))
    }
}

/// A request as the static handlers (`onBeforeRequest`, `onFetch`) take it.
fn static_request(parts: &http::request::Parts, body: &Bytes) -> HttpParts {
    HttpParts {
        method: parts.method.as_str().to_string(),
        url: absolute_url(&parts.uri, &parts.headers),
        status: 0,
        headers: flat_headers(Some(&parts.headers)),
        body: (!body.is_empty()).then(|| body.to_vec()),
    }
}

/// The path and query of an absolute URL (what rooms see as a request's URI).
fn path_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(
        uri.path_and_query()
            .map_or("/".into(), |p| p.as_str().to_string()),
    )
}

fn rebuilt_request(p: HttpParts) -> Result<Request, http::Error> {
    let mut b = http::Request::builder()
        .method(p.method.as_str())
        .uri(path_of(&p.url).unwrap_or_else(|| "/".into()));
    if let Some(h) = b.headers_mut() {
        *h = header_map(&p.headers);
    }
    b.body(p.body.map(Bytes::from).unwrap_or_default())
}

/// A refusal from a check that threw: 401 with the error, as PartyKit answers.
fn thrown(error: &Failure) -> Response {
    answer(http::StatusCode::UNAUTHORIZED, error.to_string())
}
