//! The binary's own commands that need more than a few lines (the library
//! does not include this module).

pub mod build;
pub mod eval;
pub mod new;
pub mod replay;
pub mod trace;
