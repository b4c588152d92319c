//! Broker administration the connectors and tests need, each call bounded in time: creating a
//! topic, DeleteRecords (moving a partition's earliest offset, as retention does), watermarks.
//!
//! librdkafka's admin API is asynchronous; [`block_on`] waits for one of its futures on the
//! calling thread, up to a deadline, without an async runtime.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` to completion on this thread; `None` when `timeout` passes first.
pub fn block_on<F: Future>(fut: F, timeout: Duration) -> Option<F::Output> {
    let deadline = Instant::now() + timeout;
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        // Woken by the future's waker (or spuriously: then poll again).
        thread::park_timeout(deadline - now);
    }
}

fn options(timeout: Duration) -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout))
}

fn timed_out() -> RdError {
    RdError::AdminOp(RDKafkaErrorCode::OperationTimedOut)
}

fn admin_client(config: &ClientConfig) -> Result<AdminClient<DefaultClientContext>, RdError> {
    config.create()
}

/// Creates `topic` with `partitions` partitions (replication factor 1 unless the broker
/// decides). Returns `Ok(false)` when the topic already exists.
pub fn create_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<bool, RdError> {
    let admin = admin_client(config)?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let res = block_on(
        admin.create_topics([&new], &options(timeout)),
        timeout + Duration::from_secs(1),
    )
    .ok_or_else(timed_out)??;
    match res.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, code))) => Err(RdError::AdminOp(code)),
        None => Err(RdError::AdminOpCreation(
            "the broker answered CreateTopics with no result".into(),
        )),
    }
}

/// Whether `topic` exists, with its partition count.
pub fn topic_partitions(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Option<usize>, RdError> {
    let consumer: BaseConsumer = config.create()?;
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len()))
}

/// Makes sure `topic` exists with at least `partition + 1` partitions, creating it with that
/// many when it is missing (ESP creates missing topics too). Returns whether it created it.
pub fn ensure_topic(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<bool, RdError> {
    let need = partition.max(0) as usize + 1;
    match topic_partitions(config, topic, timeout)? {
        Some(n) if n >= need => Ok(false),
        Some(_) => Err(RdError::AdminOpCreation(format!(
            "topic '{topic}' has no partition {partition}"
        ))),
        None => create_topic(config, topic, need as i32, timeout),
    }
}

/// DeleteRecords: removes every record of `topic`/`partition` below `before` (as retention
/// does). Returns the partition's new earliest offset.
pub fn delete_records(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    before: i64,
    timeout: Duration,
) -> Result<i64, RdError> {
    let admin = admin_client(config)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(before))?;
    let res = block_on(
        admin.delete_records(&tpl, &options(timeout)),
        timeout + Duration::from_secs(1),
    )
    .ok_or_else(timed_out)??;
    let el = res.find_partition(topic, partition).ok_or_else(|| {
        RdError::AdminOpCreation("the broker answered DeleteRecords without the partition".into())
    })?;
    el.error()?;
    Ok(match el.offset() {
        Offset::Offset(o) => o,
        _ => before,
    })
}

/// The partition's earliest offset and the offset the next record will get.
pub fn watermarks(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), RdError> {
    let consumer: BaseConsumer = config.create()?;
    consumer.fetch_watermarks(topic, partition, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_returns_ready_values_and_times_out() {
        assert_eq!(block_on(async { 7 }, Duration::from_millis(10)), Some(7));
        let never = std::future::pending::<()>();
        let t = Instant::now();
        assert_eq!(block_on(never, Duration::from_millis(50)), None);
        assert!(t.elapsed() >= Duration::from_millis(50));
    }
}
