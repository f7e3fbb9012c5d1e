//! ec2metaproxy: serves each Docker container the AWS credentials of its own
//! IAM role through the EC2 instance metadata API.
//!
//! Data flows one way: [`server`] -> [`imds`] -> ([`docker`], [`roles`],
//! [`credentials`]); see docs/ARCHITECTURE.md.

pub mod config;
pub mod credentials;
pub mod docker;
pub mod imds;
pub mod logging;
pub mod mapping;
pub mod metrics;
pub mod process;
pub mod reload;
pub mod roles;
pub mod server;
