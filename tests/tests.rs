//! Integration tests: the proxy's HTTP behaviour on raw requests, and the
//! security corpus and properties, and addresses that change hands.

mod operations;
mod raw;
mod remembered;
mod reuse;
mod security;
