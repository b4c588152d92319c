//! Kafka connector tests against a real Kafka-protocol broker (DESIGN.md decision 7).
//!
//! The broker comes from `SLUICE_KAFKA_BROKERS` (`scripts/services.sh start` starts one;
//! `scripts/test.sh` does it for you). Without it each test prints `SKIPPED` and passes,
//! unless `SLUICE_REQUIRE` names `kafka` (as CI sets it): then it fails. Every test uses its
//! own topics.

mod common;
mod conformance;
mod publisher;
mod subscriber;
