//! Write Reten policies in Rust.
//!
//! A policy is a WebAssembly component of the WIT package
//! `reten:policy@0.2.0` (`plugins/wit/v0.2/policy.wit`). It exports one
//! function, `resolve`, and imports nothing but the host's `log` (see
//! [`log`]: its lines show in the decision's trace, in `reten policy eval`
//! and in the fixture output). With this crate a policy is one Rust function
//! and one macro line:
//!
//! ```
//! use reten_policy_sdk::prelude::*;
//!
//! /// A target criterion: proposes commerce users, best first.
//! fn resolve(input: Input) -> Result<Vec<Candidate>, PolicyError> {
//!     Ok(input
//!         .commerce
//!         .active_users()
//!         .filter(|user| user.has_role(Role::Owner))
//!         .map(|user| Candidate::new(&user.id).with_note("owner"))
//!         .collect())
//! }
//!
//! reten_policy_sdk::export_criterion!(resolve);
//! ```
//!
//! An attribute resolver is the same with [`export_attribute!`] and a function
//! `fn(Input) -> Result<Option<serde_json::Value>, PolicyError>`; the SDK turns
//! the value into the JSON text the contract wants.
//!
//! Build the crate as a `cdylib` for `wasm32-unknown-unknown` with
//! `panic = "abort"`, then turn the core module into a component with
//! `reten-componentize` (`plugins/build.sh` does both).
//!
//! The generated bindings of both worlds are in [`bindings`]; the types they
//! share are re-exported at the crate root under friendlier names
//! ([`Input`], [`Role`], …) together with small helpers.

#![warn(missing_docs)]

// The bindings refer to their own types through this crate's name, so that the
// same paths work here and in the policy crates that expand the export macros.
extern crate self as reten_policy_sdk;

#[cfg(any(target_arch = "wasm32", test))]
mod arena;
pub mod bindings;
mod helpers;
pub mod log;
pub mod testing;

pub use serde_json;

/// The heap of a policy built for wasm32: a bump arena (the `arena` module).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: arena::Arena = arena::Arena::new();

pub use bindings::types::{
    Activity, ActivityType, Address, Candidate, Channel, Commerce, CommerceUser, Contact, ContactType, ErrorKind,
    HistoryEntry, Json, PolicyError, PolicyInput as Input, UserRole as Role,
};

/// Everything a policy usually needs, in one `use`.
pub mod prelude {
    pub use crate::{ActivityType, Candidate, Channel, Commerce, CommerceUser, ErrorKind, Input, PolicyError, Role};
    pub use serde_json::{self, Value, json};
}

/// Not part of the API: what the export macros expand to.
#[doc(hidden)]
pub mod __private {
    use crate::PolicyError;

    /// Turns an attribute's value into the JSON text the contract wants.
    pub fn attribute_output(
        value: Result<Option<serde_json::Value>, PolicyError>,
    ) -> Result<Option<String>, PolicyError> {
        match value? {
            None => Ok(None),
            Some(value) => serde_json::to_string(&value)
                .map(Some)
                .map_err(|error| PolicyError::internal(format!("cannot serialise the attribute value: {error}"))),
        }
    }
}

/// Exports a function as the policy's `resolve`, for a **target criterion**
/// (the `criterion` world).
///
/// The function must have the type
/// `fn(Input) -> Result<Vec<Candidate>, PolicyError>`. Use the macro once per
/// crate, at the top level.
///
/// ```
/// # use reten_policy_sdk::prelude::*;
/// fn resolve(input: Input) -> Result<Vec<Candidate>, PolicyError> {
///     Ok(input.commerce.users.iter().map(|user| Candidate::new(&user.id)).collect())
/// }
/// reten_policy_sdk::export_criterion!(resolve);
/// ```
#[macro_export]
macro_rules! export_criterion {
    ($resolve:path) => {
        const _: () = {
            struct RetenCriterion;

            impl $crate::bindings::criterion::Guest for RetenCriterion {
                fn resolve(
                    input: $crate::Input,
                ) -> ::core::result::Result<::std::vec::Vec<$crate::Candidate>, $crate::PolicyError> {
                    let resolve: fn(
                        $crate::Input,
                    )
                        -> ::core::result::Result<::std::vec::Vec<$crate::Candidate>, $crate::PolicyError> = $resolve;
                    resolve(input)
                }
            }

            $crate::bindings::criterion::export!(
                RetenCriterion with_types_in $crate::bindings::criterion
            );
        };
    };
}

/// Exports a function as the policy's `resolve`, for an **attribute
/// resolver** (the `attribute` world).
///
/// The function must have the type
/// `fn(Input) -> Result<Option<serde_json::Value>, PolicyError>`: `Some(value)`
/// is the attribute's value, `None` means "nothing" (the host then uses the
/// fallbacks). Use the macro once per crate, at the top level.
///
/// ```
/// # use reten_policy_sdk::prelude::*;
/// fn resolve(_input: Input) -> Result<Option<Value>, PolicyError> {
///     Ok(Some(json!({ "version": 1 })))
/// }
/// reten_policy_sdk::export_attribute!(resolve);
/// ```
#[macro_export]
macro_rules! export_attribute {
    ($resolve:path) => {
        const _: () = {
            struct RetenAttribute;

            impl $crate::bindings::attribute::Guest for RetenAttribute {
                fn resolve(
                    input: $crate::Input,
                ) -> ::core::result::Result<::core::option::Option<$crate::Json>, $crate::PolicyError> {
                    let resolve: fn(
                        $crate::Input,
                    ) -> ::core::result::Result<
                        ::core::option::Option<$crate::serde_json::Value>,
                        $crate::PolicyError,
                    > = $resolve;
                    $crate::__private::attribute_output(resolve(input))
                }
            }

            $crate::bindings::attribute::export!(
                RetenAttribute with_types_in $crate::bindings::attribute
            );
        };
    };
}
