//! Token paging: the pages of a listing as a stream, each page's `next_token` naming the next.

use std::future::Future;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use salesync_core::ports::Page;

/// The pages of a token-paged listing as a stream: `fetch(first)`, then `fetch(resume(token))`
/// with each page's `next_token` while the page says `more`. It ends after the last page, after
/// the first error (handed on as [`salesync_core::Error`]), or, with a warning naming `service`,
/// after a page that says more pages follow but names no token.
pub fn page_stream<C, T, E, F, Fut>(
    service: &'static str,
    first: C,
    resume: fn(String) -> C,
    fetch: F,
) -> BoxStream<'static, Result<Page<T>, salesync_core::Error>>
where
    C: Send + 'static,
    T: Send + 'static,
    E: Into<salesync_core::Error>,
    F: FnMut(C) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, E>> + Send + 'static,
{
    stream::try_unfold((fetch, Some(first)), move |(mut fetch, cursor)| async move {
        let Some(cursor) = cursor else { return Ok(None) };
        let page = fetch(cursor).await.map_err(Into::into)?;
        let next = match (&page.next_token, page.more) {
            (Some(t), true) => Some(resume(t.clone())),
            (None, true) => {
                tracing::warn!(service, "more pages are said to follow but no page token was sent; stopping");
                None
            }
            (_, false) => None,
        };
        Ok(Some((page, (fetch, next))))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;

    #[tokio::test]
    async fn follows_tokens_until_no_more_and_stops_at_a_missing_token() {
        let pages = page_stream("test", None, Some, |t: Option<String>| async move {
            Ok::<_, salesync_core::Error>(match t.as_deref() {
                None => Page { items: vec![1], next_token: Some("a".into()), more: true },
                Some("a") => Page { items: vec![], next_token: None, more: true },
                Some(other) => panic!("unexpected token {other}"),
            })
        });
        let got: Vec<Page<u32>> = pages.try_collect().await.unwrap();
        assert_eq!(got.len(), 2);
    }
}
