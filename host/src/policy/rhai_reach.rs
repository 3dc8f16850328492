//! What of its input a Rhai script can reach, found in its syntax, so that a
//! call copies only that.
//!
//! Rhai passes maps by value: every call gets its own copy of the input, and
//! copying (then dropping) the whole input was a third of a small script's
//! call. But a script can only reach a value through the name of its
//! `resolve` parameter, and when every use of that name is a chain of
//! property names (`input.commerce.users`, `input.config.role`), nothing but
//! the values at the end of those chains can ever be read or written: there
//! is no `eval` (the engine disables it) and no reflection over variables.
//! So a call gets a map with exactly those paths, each value copied whole.
//!
//! Any other use of the name — the bare variable (`helper(input)`,
//! `let x = input`, a closure capturing it, `"k" in input`), an index
//! (`input["commerce"]`), a method on it (`input.keys()`) — makes the whole
//! input reachable, and the call copies it all, as before. The analysis only
//! ever widens: a name it cannot place costs a full copy, never a missing
//! value. It relies on rhai's AST walk visiting every expression; the one
//! it skips (a loop's `break` value) makes the whole input reachable.

use std::collections::BTreeMap;

use rhai::{AST, ASTNode, Dynamic, Expr, Stmt};

/// What a script can reach of its argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Everything: the whole value is copied.
    All,
    /// Only these keys of a map, each with what is reachable under it.
    Keys(BTreeMap<String, Reach>),
}

impl Reach {
    /// What the parameter of `fn resolve(p)` reaches in `ast`.
    pub fn of_resolve(ast: &AST) -> Self {
        let Some(param) = ast.iter_functions().find(|f| f.name == "resolve" && f.params.len() == 1) else {
            return Reach::All;
        };
        let param = param.params[0].to_owned();
        let mut reach = Reach::Keys(BTreeMap::new());
        ast.walk(&mut |path: &[ASTNode<'_>]| {
            // The walk does not descend into a loop's `break` value (rhai
            // 1.27's `Stmt::walk`), so what that expression uses is unseen:
            // such a script copies everything.
            if let Some(ASTNode::Stmt(Stmt::BreakLoop(Some(_), ..))) = path.last() {
                reach = Reach::All;
                return false;
            }
            let Some(ASTNode::Expr(node @ Expr::Variable(v, ..))) = path.last() else { return true };
            if v.1.as_str() != param {
                return true;
            }
            let parent = path.len().checked_sub(2).map(|i| &path[i]);
            match parent.and_then(|parent| chain_after(parent, node)) {
                // An empty chain (`input.keys()`) widens to everything too.
                Some(keys) => reach.add(&keys),
                None => reach = Reach::All,
            }
            // Once everything is reachable there is nothing left to learn.
            reach != Reach::All
        });
        reach
    }

    /// Widens this reach with the path `keys` (everything under its end;
    /// an empty path is the whole value).
    fn add(&mut self, keys: &[String]) {
        let Reach::Keys(map) = self else { return };
        let Some((first, rest)) = keys.split_first() else {
            *self = Reach::All;
            return;
        };
        let entry = map.entry(first.clone()).or_insert_with(|| Reach::Keys(BTreeMap::new()));
        if rest.is_empty() {
            *entry = Reach::All;
        } else {
            entry.add(rest);
        }
    }

    /// A copy of `map` with only what this reaches.
    pub fn copy(&self, map: &rhai::Map) -> rhai::Map {
        match self {
            Reach::All => map.clone(),
            Reach::Keys(keys) => keys
                .iter()
                .filter_map(|(key, reach)| {
                    let value = map.get(key.as_str())?;
                    Some((key.as_str().into(), reach.copy_value(value)))
                })
                .collect(),
        }
    }

    fn copy_value(&self, value: &Dynamic) -> Dynamic {
        match self {
            Reach::Keys(_) if value.is_map() => match value.read_lock::<rhai::Map>() {
                Some(map) => Dynamic::from_map(self.copy(&map)),
                None => value.clone(),
            },
            _ => value.clone(),
        }
    }

    /// Whether the top-level `key` is reachable.
    pub fn reaches(&self, key: &str) -> bool {
        match self {
            Reach::All => true,
            Reach::Keys(keys) => keys.contains_key(key),
        }
    }
}

/// The property names that follow `var` when it is the left side of a dot
/// chain (`var.a.b` → `[a, b]`, stopping where the chain stops being plain
/// properties: `var.a.b.len()` → `[a, b]`, `var.a[0]` → `[a]`). `None` when
/// `var` is used any other way.
fn chain_after(parent: &ASTNode<'_>, var: &Expr) -> Option<Vec<String>> {
    let ASTNode::Expr(Expr::Dot(dot, ..)) = parent else { return None };
    if !std::ptr::eq(&dot.lhs, var) {
        return None;
    }
    let mut keys = Vec::new();
    let mut next = &dot.rhs;
    loop {
        match next {
            Expr::Property(p, ..) => {
                keys.push(p.2.to_string());
                return Some(keys);
            }
            Expr::Dot(x, ..) | Expr::Index(x, ..) => {
                let Expr::Property(p, ..) = &x.lhs else { return Some(keys) };
                keys.push(p.2.to_string());
                if matches!(next, Expr::Index(..)) {
                    return Some(keys);
                }
                next = &x.rhs;
            }
            _ => return Some(keys),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(script: &str) -> Reach {
        let engine = rhai::Engine::new();
        Reach::of_resolve(&engine.compile(script).expect("compiles"))
    }

    fn keys(paths: &[&str]) -> Reach {
        let mut r = Reach::Keys(BTreeMap::new());
        for p in paths {
            r.add(&p.split('.').map(str::to_owned).collect::<Vec<_>>());
        }
        r
    }

    #[test]
    fn property_chains_reach_only_their_ends() {
        let r = reach(
            "fn resolve(input) {
                let role = input.config.role;
                let out = [];
                for user in input.commerce.users { if user.roles.contains(role) { out.push(user.id); } }
                if input.activity.channel == \"SMS\" { return []; }
                out
            }",
        );
        assert_eq!(r, keys(&["config.role", "commerce.users", "activity.channel"]));
    }

    #[test]
    fn the_parameter_name_is_the_scripts_own() {
        assert_eq!(reach("fn resolve(ctx) { ctx.history.len() }"), keys(&["history"]));
        // Another variable of the same shape reaches nothing of the input.
        assert_eq!(reach("fn resolve(ctx) { let input = #{}; input.x; ctx.config }"), keys(&["config"]));
    }

    #[test]
    fn a_method_or_an_index_on_a_chain_keeps_what_is_before_it() {
        assert_eq!(reach("fn resolve(input) { input.commerce.users.len() }"), keys(&["commerce.users"]));
        assert_eq!(reach("fn resolve(input) { input.commerce.users[0].id }"), keys(&["commerce.users"]));
        assert_eq!(
            reach("fn resolve(input) { input.commerce.metadata?.segment }"),
            keys(&["commerce.metadata.segment"])
        );
        // A longer and a shorter path to the same place: the shorter wins.
        assert_eq!(reach("fn resolve(input) { input.commerce.name; input.commerce }"), keys(&["commerce"]));
    }

    #[test]
    fn any_other_use_reaches_everything() {
        for script in [
            "fn resolve(input) { helper(input) } fn helper(x) { x.history }",
            "fn resolve(input) { let x = input; x.history }",
            "fn resolve(input) { input[\"history\"] }",
            "fn resolve(input) { input.keys() }",
            "fn resolve(input) { \"history\" in input }",
            "fn resolve(input) { let f = || input.history; f.call() }",
            "fn resolve(input) { `${input}` }",
            "fn resolve(input) { input.commerce; input = #{}; input }",
            "fn resolve(input) { input.config.role; input }",
            "fn resolve(input) { input.commerce.users.map(|u| u.id) + [input] }",
            // A loop's `break` value is not walked by rhai's AST walk.
            "fn resolve(input) { loop { break input.history; } }",
            "fn resolve(input) { input.config; for x in [1] { break input.commerce; } }",
        ] {
            assert_eq!(reach(script), Reach::All, "{script}");
        }
    }

    /// Every script shipped in `policies/` answers the same from the copy
    /// of what it reaches as from the whole input, and the global ones copy
    /// less than all of it.
    #[test]
    fn shipped_scripts_decide_the_same_from_what_they_reach() {
        use crate::policy::limits::Limits;
        use crate::policy::rhai_engine::RhaiEngine;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let mut scripts = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("policies/ reads").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rhai") {
                    scripts.push(path);
                }
            }
        }
        assert!(scripts.len() >= 5, "{scripts:?}");
        let engine = std::sync::Arc::new(RhaiEngine::new());
        let input = crate::policy::tests::input_with_owner();
        let limits = Limits::default();
        for config in [serde_json::json!({}), serde_json::json!({"role": "OWNER", "channel": "SMS", "days": 3})] {
            let config = config.as_object().cloned().unwrap_or_default();
            for path in &scripts {
                let source = std::fs::read_to_string(path).expect("reads");
                let policy = engine.compile(&source).expect("compiles");
                let whole = policy.run(input.rhai(&Reach::All, &config).expect("converts"), &limits);
                let reached = policy.run(policy.argument(&input, &config).expect("converts"), &limits);
                assert_eq!(format!("{:?}", whole.result), format!("{:?}", reached.result), "{}", path.display());
                assert_eq!(whole.operations, reached.operations, "{}", path.display());
                if path.ends_with("global/criteria/role_match.rhai") {
                    assert_eq!(policy.reach(), &keys(&["config.role", "commerce.users"]));
                }
                if path.to_string_lossy().contains("global") {
                    assert_ne!(policy.reach(), &Reach::All, "{}", path.display());
                }
            }
        }
    }

    /// A call that changes what it reached changes its own copy only.
    #[test]
    fn a_call_that_changes_its_input_leaves_the_next_calls_alone() {
        use crate::policy::rhai_engine::RhaiEngine;
        let engine = std::sync::Arc::new(RhaiEngine::new());
        let policy = engine
            .compile("fn resolve(input) { let n = input.commerce.users.len(); input.commerce.users.clear(); [n] }")
            .expect("compiles");
        assert_eq!(policy.reach(), &keys(&["commerce.users"]));
        let input = crate::policy::tests::input_with_owner();
        let config = serde_json::Map::new();
        let limits = crate::policy::limits::Limits::default();
        for _ in 0..2 {
            let run = policy.run(policy.argument(&input, &config).expect("converts"), &limits);
            assert_eq!(format!("{:?}", run.result.expect("runs")), "[2]");
        }
    }

    #[test]
    fn a_copy_holds_exactly_the_reached_paths() {
        let engine = rhai::Engine::new();
        let input: rhai::Map = engine
            .eval("#{ config: #{ role: \"OWNER\" }, commerce: #{ name: \"n\", users: [#{ id: \"u\" }] }, history: [1, 2] }")
            .expect("a map");
        let copy = keys(&["config", "commerce.users"]).copy(&input);
        let text = format!("{copy:?}");
        assert!(text.contains("OWNER") && text.contains("\"u\""), "{text}");
        assert!(!copy.contains_key("history"), "{text}");
        let commerce = copy["commerce"].read_lock::<rhai::Map>().expect("a map");
        assert!(!commerce.contains_key("name") && commerce.contains_key("users"), "{text}");
        // A path the input lacks is left out, as a property it lacks reads `()`.
        assert!(keys(&["missing.x"]).copy(&input).is_empty());
        assert_eq!(Reach::All.copy(&input).len(), 3);
    }
}
