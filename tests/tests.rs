//! Integration tests: the proxy's HTTP behaviour on raw requests.

mod raw;
