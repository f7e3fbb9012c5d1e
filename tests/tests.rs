//! Integration tests: the proxy's HTTP behaviour on raw requests, and the
//! security corpus and properties.

mod operations;
mod raw;
mod security;
