//! Server streams produced by blocking object reads, without a thread per stream.
//!
//! A listing RPC reads objects with gix (blocking calls) and sends many messages. Written as a loop on a
//! blocking thread that waits whenever the client reads slowly, every stalled client held one of tokio's
//! blocking threads for as long as it stalled: a few hundred of them exhausted the pool and every other read
//! timed out. Here the producer is an `async` block whose only await is [`Out::send`]. It is polled on the
//! read pool ([`super::pool`]), runs its reads up to the next message, and keeps going while the response channel has
//! room; when it is full the producer is parked as a value (its state and one message) until the client
//! makes room, holding no thread. A client that goes away drops it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::mpsc::{self, error::TrySendError};
use tonic::Status;

/// Messages queued per stream before the producer is parked.
const DEPTH: usize = 4;

/// Where a producer puts its messages.
pub struct Out<T> {
    slot: Arc<Mutex<Option<T>>>,
}

impl<T: Send> Out<T> {
    /// Hands over one message when awaited; the producer continues when the stream has room for the
    /// next. If the client has gone it never continues (it is dropped), so there is nothing to check.
    pub fn send(&self, message: T) -> impl Future<Output = ()> + Send + use<T> {
        let slot = self.slot.clone();
        let mut message = Some(message);
        let mut given = false;
        // Pending once the message is in the slot (the driver takes it), ready when polled again. A send
        // polled while another's message is still there waits its turn instead of replacing it.
        std::future::poll_fn(move |_| {
            if given {
                return Poll::Ready(());
            }
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = message.take();
                given = true;
            }
            Poll::Pending
        })
    }
}

/// A server stream fed by `produce`, which may block between its sends (object reads, a git child's
/// output) but must await nothing but [`Out::send`]. An error it returns ends the stream with that status.
pub fn stream<T, F, Fut>(produce: F) -> tonic::codegen::BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(Out<T>) -> Fut,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<T, Status>>(DEPTH);
    let slot = Arc::new(Mutex::new(None));
    let producer = Box::pin(produce(Out { slot: slot.clone() }));
    tokio::spawn(drive(producer, slot, tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

type Producer = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// What one run on the blocking pool ended with.
struct Ran<T> {
    /// The producer, unless it finished (or its client is gone).
    producer: Option<Producer>,
    /// A message (or the final error) that did not fit: sent while parked.
    pending: Option<Result<T, Status>>,
}

async fn drive<T: Send + 'static>(
    mut producer: Producer,
    slot: Arc<Mutex<Option<T>>>,
    tx: mpsc::Sender<Result<T, Status>>,
) {
    loop {
        let (slot, run_tx) = (slot.clone(), tx.clone());
        let ran = super::pool::run(move || run(producer, &slot, &run_tx)).await;
        let ran = match ran {
            Ok(ran) => ran,
            Err(e) => {
                tracing::error!(error = %e, "stream producer failed");
                let _ = tx.send(Err(Status::internal("stream producer failed"))).await;
                return;
            }
        };
        if let Some(message) = ran.pending {
            // Parked: waiting for the client to make room takes no thread.
            if tx.send(message).await.is_err() {
                return;
            }
        }
        match ran.producer {
            Some(p) => producer = p,
            None => return,
        }
    }
}

/// How long a producer runs before it goes to the back of the read pool's queue: the pool has a few
/// threads, and a long listing read by a fast client must not keep one from every other read.
const SLICE: std::time::Duration = std::time::Duration::from_millis(20);

/// Polls the producer until it ends, a message does not fit in the channel, or its time slice is used.
fn run<T>(mut producer: Producer, slot: &Mutex<Option<T>>, tx: &mpsc::Sender<Result<T, Status>>) -> Ran<T> {
    let mut cx = Context::from_waker(Waker::noop());
    let started = std::time::Instant::now();
    loop {
        let message = match producer.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(())) => return Ran { producer: None, pending: None },
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => match slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(m) => Ok(m),
                None => Err(Status::internal("stream producer awaited something other than its output")),
            },
        };
        let last = message.is_err();
        match tx.try_send(message) {
            Ok(()) if last => return Ran { producer: None, pending: None },
            Ok(()) if started.elapsed() >= SLICE => return Ran { producer: Some(producer), pending: None },
            Ok(()) => {}
            Err(TrySendError::Full(message)) => {
                return Ran { producer: (!last).then_some(producer), pending: Some(message) };
            }
            Err(TrySendError::Closed(_)) => return Ran { producer: None, pending: None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_in_order_then_the_error() {
        let s = stream(|out| async move {
            for i in 0..100 {
                out.send(i).await;
            }
            Err(Status::not_found("the end"))
        });
        let got: Vec<Result<i32, Status>> = s.collect().await;
        assert_eq!(got.len(), 101);
        assert!(got[..100].iter().enumerate().all(|(i, m)| m.as_ref().ok() == Some(&(i as i32))));
        assert_eq!(got[100].as_ref().unwrap_err().code(), tonic::Code::NotFound);
    }

    /// A message goes out when its send is awaited, whatever order the sends were made in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_go_out_as_they_are_awaited() {
        let s = stream(|out| async move {
            let first = out.send(1);
            let second = out.send(2);
            second.await;
            first.await;
            let (a, b) = (out.send(3), out.send(4));
            futures::join!(a, b);
            Ok(())
        });
        let got: Vec<i32> = s.map(|m| m.unwrap()).collect().await;
        assert_eq!(got, [2, 1, 3, 4]);
    }

    /// A client that stops reading parks the producer: it has run only as far as the channel holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_reader_parks_the_producer() {
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = made.clone();
        let mut s = stream(move |out| async move {
            for i in 0..1_000_000u32 {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                out.send(i).await;
            }
            Ok(())
        });
        assert_eq!(s.next().await.unwrap().unwrap(), 0);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let so_far = made.load(std::sync::atomic::Ordering::SeqCst);
        assert!(so_far <= DEPTH + 2, "produced {so_far} ahead of a stalled reader");
        // Reading on resumes it; dropping the stream drops it.
        assert_eq!(s.next().await.unwrap().unwrap(), 1);
        drop(s);
    }
}
