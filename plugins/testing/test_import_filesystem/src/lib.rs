//! `test_import_filesystem` — a test criterion that imports
//! `wasi:filesystem/preopens@0.2.6`: the filesystem (a minimal stand-in for
//! the real interface).
//!
//! No policy may import anything, so the host must refuse to load it. The
//! import is called in `resolve`, so it stays in the component.
//!
//! Its world (`wit/world.wit`) is the `criterion` world plus that import;
//! `wit/deps/` holds a minimal local copy of the imported package.

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/v0.1", "wit"],
        world: "reten-test:import-filesystem/plugin",
        generate_all,
        with: {
            "reten:policy/types@0.1.0": reten_policy_sdk::bindings::types,
        },
    });
}

use reten_policy_sdk::prelude::*;

struct Plugin;

impl bindings::Guest for Plugin {
    fn resolve(input: Input) -> Result<Vec<Candidate>, PolicyError> {
        let note = bindings::wasi::filesystem::preopens::get_directories().join(",");
        Ok(input.commerce.users.first().map(|user| Candidate::new(&user.id).with_note(note)).into_iter().collect())
    }
}

bindings::export!(Plugin with_types_in bindings);
