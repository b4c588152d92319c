//! Hot failover (1+N) for Sluice's Kafka subscriber connectors (DESIGN.md decision 3,
//! docs/ha.md).
//!
//! The pure part, tested without ZooKeeper:
//! - [`OutputId`]: the deterministic ID of an output block (`INPUT.SEQ`);
//! - [`StandbyBuffer`]: the last `numbufferedmsgs` output blocks of a standby, and the
//!   [`Takeover`] decision made from them and the last ID on the output topic;
//! - [`Role`] and [`Lease`]: an active writes only while its lease, shorter than the ZooKeeper
//!   session timeout, is valid;
//! - [`decide`]: the election decision from the children of the election path.
//!
//! The thin ZooKeeper part is [`ZkElection`].

mod buffer;
mod election;
mod lease;
mod output_id;
mod zk;

pub use buffer::{GapRange, OutOfOrder, StandbyBuffer, Takeover};
pub use election::{decide, node_sequence, role_for, Standing, NODE_PREFIX};
pub use lease::{Lease, Role};
pub use output_id::{BadOutputId, OutputId};
pub use zk::{ElectionState, HaError, ZkElection};
