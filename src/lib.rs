//! ferroserve: a machine-learning model server. See `docs/architecture.md` for the code map.

pub mod backends;
pub mod tensor;
