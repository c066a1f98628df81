//! The HTTP plumbing both emulators share: a lock that survives a panicking test thread, binding
//! and spawning the axum server with a graceful stop, and the responses that plain replies and
//! injected transport faults turn into. What goes over the wire (the Marketo envelope, the
//! Salesforce error arrays) stays with each emulator.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::faults::FaultAction;

/// The content type of every JSON body the emulators send.
pub(crate) const JSON_UTF8: &str = "application/json;charset=UTF-8";

/// Locks a mutex, ignoring poisoning (state stays usable after a panicking test thread).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// How a response leaves: whole, broken off (connection dropped) or as a truncated JSON body.
pub(crate) enum Transport {
    /// The reply as rendered.
    Normal,
    /// The connection breaks off (after part of a file body, where the emulator sends one).
    Drop,
    /// HTTP 200 with a JSON body cut short.
    Malformed,
}

/// What an injected fault leaves of one call, once its delay (if it is one) is spent.
pub(crate) enum Injected<E> {
    /// Do the work and send its reply (no fault, or a delay).
    Proceed,
    /// Answer with this protocol error instead of doing the work.
    Error(E),
    /// Do the work, then drop the connection.
    ApplyThenDrop,
    /// Do no work: the connection drops ([`Transport::Drop`]) or the body comes cut short
    /// ([`Transport::Malformed`]).
    Break(Transport),
}

/// Spends the delay of a `Delay` fault and tells what `action` leaves of the call.
pub(crate) async fn inject<E>(action: Option<FaultAction<E>>) -> Injected<E> {
    match action {
        None => Injected::Proceed,
        Some(FaultAction::Delay(d)) => {
            tokio::time::sleep(d).await;
            Injected::Proceed
        }
        Some(FaultAction::Error(e)) => Injected::Error(e),
        Some(FaultAction::ApplyThenDrop) => Injected::ApplyThenDrop,
        Some(FaultAction::DropConnection) => Injected::Break(Transport::Drop),
        Some(FaultAction::MalformedBody) => Injected::Break(Transport::Malformed),
    }
}

/// The running server task.
pub(crate) struct ServerTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl ServerTask {
    /// Asks the server to stop and waits for it (aborting it after 2 s).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let mut handle = self.handle;
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut handle).await.is_err() {
            handle.abort();
        }
    }
}

/// Binds `addr`; returns the listener and the address it got (the port, for `:0`).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves `app` on `listener` in a background task until [`ServerTask::stop`]; `name` tells the
/// emulators apart in the log.
pub(crate) fn spawn(listener: TcpListener, app: Router, name: &'static str) -> ServerTask {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "{name} emulator server stopped with an error");
        }
    });
    ServerTask { stop: tx, handle }
}

/// A response with `status` (200 when it is no valid status), `content_type` (if any), the extra
/// headers (those that are no valid header value are left out) and `body`.
pub(crate) fn response(
    status: u16,
    content_type: Option<&'static str>,
    headers: &[(&'static str, String)],
    body: impl Into<Body>,
) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some(ct) = content_type {
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
    r
}

/// A body that sends `partial` (if any) and then breaks off as a dropped connection does.
pub(crate) fn dropped_body(partial: Option<Bytes>) -> Body {
    let head = futures::stream::iter(partial.map(Ok::<Bytes, std::io::Error>));
    let tail = futures::stream::once(async {
        tokio::task::yield_now().await;
        Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped by fault injection"))
    });
    Body::from_stream(futures::StreamExt::chain(head, tail))
}
