//! Integration tests: the proxy's HTTP behaviour on raw requests, and the
//! security corpus and properties, and addresses that change hands; and the
//! layering of src/ (architecture).

mod architecture;
mod operations;
mod raw;
mod remembered;
mod reuse;
mod security;
