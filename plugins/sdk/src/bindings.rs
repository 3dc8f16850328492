//! The raw bindings `wit-bindgen` generates from `plugins/wit/v0.2`.
//!
//! Most policies never look here: [`export_criterion!`](crate::export_criterion)
//! and [`export_attribute!`](crate::export_attribute) wrap them. Use them
//! directly to implement a world's `Guest` trait by hand, e.g. to return an
//! attribute's JSON text as is:
//!
//! ```
//! use reten_policy_sdk::bindings::attribute::{self, Guest};
//!
//! struct Raw;
//! impl Guest for Raw {
//!     fn resolve(_: reten_policy_sdk::Input)
//!         -> Result<Option<String>, reten_policy_sdk::PolicyError> {
//!         Ok(Some("{\"raw\": true}".to_owned()))
//!     }
//! }
//! attribute::export!(Raw with_types_in reten_policy_sdk::bindings::attribute);
//! ```
//!
//! Both worlds share one set of types, [`types`] (the `criterion` world's
//! bindings generate them; the `attribute` world's reuse them).

#![allow(missing_docs, clippy::all)]

/// The `criterion` world: `resolve` returns a list of candidates.
pub mod criterion {
    wit_bindgen::generate!({
        path: "../wit/v0.2",
        world: "reten:policy/criterion@0.2.0",
        additional_derives: [PartialEq],
        pub_export_macro: true,
        default_bindings_module: "reten_policy_sdk::bindings::criterion",
        export_macro_name: "export",
        runtime_path: "reten_policy_sdk::bindings::rt",
    });
}

/// The `attribute` world: `resolve` returns an optional JSON value.
pub mod attribute {
    wit_bindgen::generate!({
        path: "../wit/v0.2",
        world: "reten:policy/attribute@0.2.0",
        pub_export_macro: true,
        default_bindings_module: "reten_policy_sdk::bindings::attribute",
        export_macro_name: "export",
        runtime_path: "reten_policy_sdk::bindings::rt",
        with: {
            "reten:policy/types@0.2.0": reten_policy_sdk::bindings::types,
            "reten:policy/log@0.2.0": reten_policy_sdk::bindings::log,
        },
    });
}

/// The types of the interface `reten:policy/types@0.2.0`, shared by both
/// worlds.
pub use criterion::reten::policy::types;

/// The host's `log` import (`reten:policy/log@0.2.0`), shared by both
/// worlds. Policies call it through [`crate::log`].
pub use criterion::reten::policy::log;

/// The `wit-bindgen` runtime the generated code uses, so that policy crates
/// need not depend on `wit-bindgen` themselves.
#[doc(hidden)]
pub use wit_bindgen::rt;
