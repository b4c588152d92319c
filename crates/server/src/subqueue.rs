//! The queue between a project thread and one client subscriber (a WebSocket subscriber or a
//! `subscribe` on the `--pubsub` port).
//!
//! The project never waits for a client: it hands each output block over without blocking and
//! the connection's task formats and writes it. A subscriber that still has more than its bound
//! of events waiting (handed over, not yet taken by its connection) when the next block arrives
//! has fallen behind: the project stops sending to it (the block and everything after it are
//! not queued for it), counts and logs it, and tells its connection, which sends the reason
//! (a WebSocket close frame, or a last `error` line on the pubsub port) and closes. The other
//! subscribers and the project go on. A block that arrives at an empty queue is always taken,
//! so the memory held for one subscriber is at most the bound plus one block.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::project::SubMsg;

/// Default bound of a subscriber's queue, in events (`--subscriber-queue`).
pub const DEFAULT_BOUND: usize = 65_536;

/// How long a dropped subscriber's connection keeps trying to deliver the reason (what was
/// already being written, then the close frame or `error` line) before it is closed anyway.
pub const CLOSE_GRACE: Duration = Duration::from_secs(60);

/// A new queue: the project's end and the connection's end. `label` names the subscriber in
/// the log; `dropped` counts the subscribers dropped server-wide.
pub fn channel(bound: usize, label: String, dropped: Arc<AtomicU64>) -> (SubSender, SubReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (kick, kicked) = oneshot::channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    (
        SubSender {
            tx,
            waiting: waiting.clone(),
            bound,
            kick: Some(kick),
            label,
            dropped,
        },
        SubReceiver {
            rx,
            waiting,
            kicked,
            kick_done: false,
        },
    )
}

/// The project's end of a subscriber queue.
pub struct SubSender {
    tx: mpsc::UnboundedSender<SubMsg>,
    waiting: Arc<AtomicUsize>,
    bound: usize,
    kick: Option<oneshot::Sender<String>>,
    label: String,
    dropped: Arc<AtomicU64>,
}

impl SubSender {
    /// Hands a block over without waiting. False when the subscriber is gone, or has just been
    /// dropped for falling behind: the caller forgets it.
    pub fn offer(&mut self, msg: SubMsg) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        let waiting = self.waiting.load(Ordering::Acquire);
        if waiting > self.bound {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let reason = format!(
                "too slow: more than {} events waiting to be sent",
                self.bound
            );
            tracing::warn!(
                target: "esp.pubsub",
                "{}: disconnected, {reason} ({waiting} waiting; {n} slow subscriber(s) dropped since the server started)",
                self.label
            );
            if let Some(k) = self.kick.take() {
                let _ = k.send(reason);
            }
            return false;
        }
        self.waiting.fetch_add(msg.events.len(), Ordering::AcqRel);
        self.tx.send(msg).is_ok()
    }
}

/// What a subscriber's connection gets next.
pub enum Next {
    /// An output block to write.
    Block(SubMsg),
    /// The project ended the subscription (project stopped, deleted, or the server stops).
    Closed,
    /// The subscriber fell behind and was dropped, with the reason to tell the client.
    Dropped(String),
}

/// The connection's end of a subscriber queue.
pub struct SubReceiver {
    rx: mpsc::UnboundedReceiver<SubMsg>,
    waiting: Arc<AtomicUsize>,
    kicked: oneshot::Receiver<String>,
    kick_done: bool,
}

/// Resolves when the subscriber is dropped for falling behind; never otherwise.
async fn kicked(rx: &mut oneshot::Receiver<String>, done: &mut bool) -> String {
    if !*done {
        let r = rx.await;
        *done = true;
        if let Ok(reason) = r {
            return reason;
        }
    }
    std::future::pending().await
}

impl SubReceiver {
    /// The next block, or why there is none. Cancel-safe.
    pub async fn next(&mut self) -> Next {
        tokio::select! {
            biased;
            reason = kicked(&mut self.kicked, &mut self.kick_done) => Next::Dropped(reason),
            m = self.rx.recv() => match m {
                Some(m) => {
                    self.waiting.fetch_sub(m.events.len(), Ordering::AcqRel);
                    Next::Block(m)
                }
                None => match self.kicked.try_recv() {
                    Ok(reason) => Next::Dropped(reason),
                    Err(_) => Next::Closed,
                },
            },
        }
    }

    /// Resolves with the reason when the subscriber is dropped for falling behind (to stop a
    /// write the client does not read); never otherwise. Cancel-safe.
    pub async fn dropped(&mut self) -> String {
        kicked(&mut self.kicked, &mut self.kick_done).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_event::MsgId;

    fn block(n: usize) -> SubMsg {
        SubMsg {
            id: MsgId(1),
            snapshot: false,
            events: Arc::new(vec![sluice_event::Event::insert(Vec::new()); n]),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_subscriber_over_its_bound_is_dropped_with_the_reason() {
        let dropped = Arc::new(AtomicU64::new(0));
        let (mut tx, mut rx) = channel(10, "test".into(), dropped.clone());
        // A block larger than the bound is taken at an empty queue.
        assert!(tx.offer(block(50)));
        // Over the bound now: the next block drops the subscriber.
        assert!(!tx.offer(block(1)));
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        match rx.next().await {
            Next::Dropped(r) => assert!(r.contains("more than 10 events"), "{r}"),
            _ => panic!("expected Dropped"),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_subscriber_that_keeps_up_is_never_dropped() {
        let dropped = Arc::new(AtomicU64::new(0));
        let (mut tx, mut rx) = channel(10, "test".into(), dropped.clone());
        for _ in 0..1000 {
            assert!(tx.offer(block(8)));
            assert!(matches!(rx.next().await, Next::Block(b) if b.events.len() == 8));
        }
        drop(tx);
        assert!(matches!(rx.next().await, Next::Closed));
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
    }
}
