//! Helpers for the connectors' tests (feature `testing`; not a stable API): a hostile loopback
//! server that serves a working token endpoint and answers every other request with what the
//! test asks for, and builders for the answers (JSON, HTML pages, streamed and dripping bodies).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Response, StatusCode, header};
use axum::routing::MethodFilter;
use axum::routing::on;
use futures::StreamExt;

/// A server on loopback: the token endpoint at `token_path` answers with the token body; every
/// other request is counted and answered by the test's `respond`.
#[derive(Debug)]
pub struct Hostile {
    base: String,
    hits: Arc<AtomicUsize>,
}

impl Hostile {
    /// Starts the server. `token_body` gets the server's base URL (`http://127.0.0.1:port`), for
    /// a token answer that names the instance.
    pub async fn start(
        token_method: Method,
        token_path: &str,
        token_body: impl FnOnce(&str) -> String,
        respond: impl Fn() -> Response<Body> + Send + Sync + 'static,
    ) -> std::io::Result<Hostile> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let token = token_body(&base);
        let filter = MethodFilter::try_from(token_method).map_err(std::io::Error::other)?;
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let respond = Arc::new(respond);
        let app = axum::Router::new()
            .route(
                token_path,
                on(filter, move || {
                    let token = token.clone();
                    async move { json(StatusCode::OK, token) }
                }),
            )
            .fallback(move || {
                let respond = Arc::clone(&respond);
                counter.fetch_add(1, Ordering::SeqCst);
                async move { respond() }
            });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Hostile { base, hits })
    }

    /// The base URL, `http://127.0.0.1:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Requests answered by `respond` so far (token requests not counted).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// An answer with `Content-Type: <content_type>`.
pub fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response<Body> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

/// A JSON answer.
pub fn json(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    answer(status, "application/json", body)
}

/// An HTML page (`text/html`), as a proxy or a login wall sends it.
pub fn html(status: StatusCode, page: String) -> Response<Body> {
    answer(status, "text/html", page)
}

/// A body streamed from `chunks`.
pub fn streamed(chunks: impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static) -> Body {
    Body::from_stream(chunks)
}

/// A body of one space every `every`, forever.
pub fn drip(every: Duration) -> Body {
    streamed(
        futures::stream::unfold((), move |()| async move {
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from_static(b" ")), ()))
        })
        .boxed(),
    )
}

/// The whole source chain of an error, ` / ` between the links, for assertions on causes.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(" / ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
