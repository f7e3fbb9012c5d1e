//! Integration tests: the proxy's HTTP behaviour on raw requests, and the
//! security corpus and properties, and addresses that change hands; and the
//! layering of src/ (architecture). The fixtures they share are in
//! `support`; spec files import from it, never from each other.

mod architecture;
mod by_token;
mod ipv6;
mod operations;
mod raw;
mod remembered;
mod reuse;
mod security;
mod support;
