//! ec2metaproxy: serves each Docker container the AWS credentials of its own
//! IAM role through the EC2 instance metadata API.
//!
//! Layers, bottom to top; a module uses only lower layers (tests/architecture.rs
//! holds this, docs/ARCHITECTURE.md explains it):
//! - L0 leaves: [`time`], [`sys`], [`metrics`], [`logging`]
//! - L1: [`server`] (the generic listener), [`container`] (the shared model)
//! - L2: [`platform`] (where callers come from), [`roles`] (which role they get),
//!   [`tagging`] (what CloudTrail and IAM policies see of a container)
//! - L3: [`credentials`] (the STS cache)
//! - L4: [`broker`] (the core every front door calls; knows no protocol)
//! - L5 front doors: [`imds`], [`ccreds`], [`health`] (they know no config file)
//! - L6: [`config`] (builds every lower layer's settings)
//! - L7: [`reload`] (puts a new config in force); main.rs only wires.

pub mod broker;
pub mod ccreds;
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
pub mod tagging;
pub mod time;

/// A hash map for the maps read on every request (containers by address,
/// credentials by role request, roles by alias). foldhash (hashbrown's
/// default) costs a fraction of std's SipHash there and keeps a random
/// per-process seed; the keys come from Docker and the config, not from
/// callers.
pub type FastHashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
