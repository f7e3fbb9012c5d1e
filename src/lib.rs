//! ec2metaproxy: serves each Docker container the AWS credentials of its own
//! IAM role through the EC2 instance metadata API.
//!
//! Data flows one way: [`server`] -> [`imds`] -> ([`docker`], [`roles`],
//! [`credentials`]); see docs/ARCHITECTURE.md.

pub mod broker;
pub mod config;
pub mod container;
pub mod credentials;
pub mod health;
pub mod imds;
pub mod logging;
pub mod metrics;
pub mod platform;
pub mod reload;
pub mod roles;
pub mod server;
pub mod sys;
pub mod time;

/// A hash map for the maps read on every request (containers by address,
/// credentials by role request, roles by alias). foldhash (hashbrown's
/// default) costs a fraction of std's SipHash there and keeps a random
/// per-process seed; the keys come from Docker and the config, not from
/// callers.
pub type FastHashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
