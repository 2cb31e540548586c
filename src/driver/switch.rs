//! A stream that follows the latest of the streams another stream makes:
//! the cluster watches, restarted when a reload replaces the clients.

use futures_util::stream::{BoxStream, Stream, StreamExt as _};

/// The items of the latest stream `streams` produced; the one before is
/// dropped (its watches stop) as soon as the next arrives. Ends when
/// `streams` ends.
pub(super) fn switch_latest<T: Send + 'static>(
    streams: impl Stream<Item = BoxStream<'static, T>> + Send + 'static,
) -> BoxStream<'static, T> {
    let state = (streams.boxed(), None::<BoxStream<'static, T>>);
    futures_util::stream::unfold(state, |(mut outer, mut current)| async move {
        loop {
            let Some(inner) = current.as_mut() else {
                current = Some(outer.next().await?);
                continue;
            };
            tokio::select! {
                next = outer.next() => current = Some(next?),
                item = inner.next() => match item {
                    Some(item) => return Some((item, (outer, current))),
                    None => current = None,
                },
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use futures_util::stream;

    use super::*;

    #[tokio::test]
    async fn follows_the_latest_stream_and_drops_the_one_before() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<BoxStream<'static, u32>>();
        let mut switched = switch_latest(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
        // The first stream gives one item and then waits forever, as a
        // watch does.
        tx.send(stream::iter([1]).chain(stream::pending()).boxed())
            .unwrap();
        assert_eq!(switched.next().await, Some(1));
        tx.send(stream::iter([2, 3]).chain(stream::pending()).boxed())
            .unwrap();
        assert_eq!(switched.next().await, Some(2));
        assert_eq!(switched.next().await, Some(3));
        // The outer stream's end ends it, though the last inner one waits.
        drop(tx);
        assert_eq!(switched.next().await, None);
    }
}
