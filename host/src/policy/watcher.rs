//! Hot reload: a `notify` watcher on the whole policies directory, debounced,
//! plus a periodic rescan that catches anything the watcher missed.
//!
//! Each burst of events reloads only the layers it touched (`global/`, or
//! one tenant's folder); anything else — a Kubernetes ConfigMap swapping its
//! `..data` symlink, a `tenants/` folder created or removed — reloads
//! everything. Reloads compile on a blocking thread, never on the request
//! path, and publish only when something changed.
//!
//! File events can be turned off (`RETEN_POLICY_WATCH=false`, for a volume
//! whose events are unreliable or too many); the rescan runs either way.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Registry;
use super::loader::Scope;
use crate::domain::TenantId;

/// How the watcher behaves.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// Events closer together than this are handled as one burst.
    pub debounce: Duration,
    /// How often everything is re-read regardless of events.
    pub rescan_every: Duration,
    /// Whether to react to file events at all.
    pub events: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self { debounce: Duration::from_millis(100), rescan_every: Duration::from_secs(30), events: true }
    }
}

/// The running watcher; dropping it stops it.
pub struct Watcher {
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a burst of events asks to reload.
enum Reload {
    All,
    Scopes(BTreeSet<Scope>),
}

/// Starts watching the registry's directory.
pub fn spawn(registry: Arc<Registry>, options: WatchOptions) -> anyhow::Result<Watcher> {
    if !options.events {
        return Ok(Watcher { task: tokio::spawn(rescan_only(registry, options.rescan_every)) });
    }
    let root = registry.root().to_owned();
    let (tx, rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |event| {
        // The receiver only goes away when the task ends.
        let _ = tx.send(event);
    })?;
    watcher.watch(&root, RecursiveMode::Recursive)?;
    let task = tokio::spawn(async move {
        // The watcher lives as long as the task.
        let _watcher = watcher;
        run(registry, root, rx, options).await;
    });
    Ok(Watcher { task })
}

async fn rescan_only(registry: Arc<Registry>, every: Duration) {
    let mut rescan = tokio::time::interval(every);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rescan.tick().await;
    loop {
        rescan.tick().await;
        reload(&registry, Reload::All).await;
    }
}

async fn run(
    registry: Arc<Registry>,
    root: PathBuf,
    mut rx: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    options: WatchOptions,
) {
    let mut rescan = tokio::time::interval(options.rescan_every);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rescan.tick().await;
    loop {
        let first = tokio::select! {
            event = rx.recv() => match event {
                Some(e) => e,
                None => return,
            },
            _ = rescan.tick() => {
                reload(&registry, Reload::All).await;
                continue;
            }
        };
        let mut wanted = Reload::Scopes(BTreeSet::new());
        absorb(&mut wanted, &root, first);
        // Debounce: keep gathering until the directory has been quiet.
        while let Ok(Some(event)) = tokio::time::timeout(options.debounce, rx.recv()).await {
            absorb(&mut wanted, &root, event);
        }
        reload(&registry, wanted).await;
    }
}

fn absorb(wanted: &mut Reload, root: &Path, event: notify::Result<notify::Event>) {
    let Reload::Scopes(scopes) = wanted else { return };
    match event {
        // Reading a file changes nothing; and a reload reads every file, so
        // reacting to reads would reload for ever.
        Ok(event) if !is_change(&event.kind) => {}
        Ok(event) => {
            for path in &event.paths {
                match scope_of(root, path) {
                    Some(scope) => {
                        scopes.insert(scope);
                    }
                    None => {
                        *wanted = Reload::All;
                        return;
                    }
                }
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "the policy watcher reported an error; rescanning everything");
            *wanted = Reload::All;
        }
    }
}

/// Whether an event can mean new content: anything but a read (an open, an
/// access, a close after reading). A close after writing counts.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The layer a changed path belongs to; `None` when only a full reload will
/// do (the root itself, `tenants/`, symlinks of a ConfigMap, …).
pub fn scope_of(root: &Path, path: &Path) -> Option<Scope> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = rel.components().filter_map(|c| match c {
        Component::Normal(p) => p.to_str(),
        _ => None,
    });
    match (parts.next(), parts.next()) {
        (Some("global"), Some(_)) => Some(Scope::Global),
        (Some("tenants"), Some(dir)) => TenantId::parse(dir).ok().map(Scope::Tenant),
        _ => None,
    }
}

async fn reload(registry: &Arc<Registry>, wanted: Reload) {
    let registry = Arc::clone(registry);
    let outcome = tokio::task::spawn_blocking(move || match wanted {
        Reload::All => registry.reload_all(),
        Reload::Scopes(scopes) if scopes.is_empty() => registry.generation(),
        Reload::Scopes(scopes) => registry.reload(&scopes),
    })
    .await;
    if let Err(err) = outcome {
        tracing::error!(error = %err, "a policy reload panicked; the serving policies are unchanged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: notify::EventKind, path: &Path) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind).add_path(path.to_owned()))
    }

    #[test]
    fn reads_do_not_ask_for_a_reload_but_writes_do() {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        let root = Path::new("/p");
        let id = TenantId::new();
        let file = Path::new("/p/tenants").join(id.to_string()).join("criteria/x.rhai");
        let mut wanted = Reload::Scopes(BTreeSet::new());
        // What a reload itself causes: opening every file and listing tenants/.
        absorb(&mut wanted, root, event(EventKind::Access(AccessKind::Open(AccessMode::Any)), Path::new("/p/tenants")));
        absorb(&mut wanted, root, event(EventKind::Access(AccessKind::Open(AccessMode::Read)), &file));
        absorb(&mut wanted, root, event(EventKind::Access(AccessKind::Close(AccessMode::Read)), &file));
        assert!(matches!(&wanted, Reload::Scopes(s) if s.is_empty()), "reads ask for nothing");

        absorb(&mut wanted, root, event(EventKind::Modify(ModifyKind::Any), &file));
        absorb(&mut wanted, root, event(EventKind::Access(AccessKind::Close(AccessMode::Write)), &file));
        assert!(matches!(&wanted, Reload::Scopes(s) if s.len() == 1 && s.contains(&Scope::Tenant(id))));

        absorb(&mut wanted, root, event(EventKind::Create(CreateKind::Any), Path::new("/p/..data")));
        assert!(matches!(wanted, Reload::All));
    }

    #[test]
    fn paths_map_to_the_layer_they_belong_to() {
        let root = Path::new("/p");
        let id = TenantId::new();
        assert_eq!(scope_of(root, Path::new("/p/global/criteria/x.rhai")), Some(Scope::Global));
        assert_eq!(
            scope_of(root, &Path::new("/p/tenants").join(id.to_string()).join("tenant.toml")),
            Some(Scope::Tenant(id))
        );
        assert_eq!(scope_of(root, Path::new("/p/..data")), None);
        assert_eq!(scope_of(root, Path::new("/p/tenants")), None);
        assert_eq!(scope_of(root, Path::new("/p/tenants/not-a-uuid/x")), None);
    }
}
