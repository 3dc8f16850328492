//! Hot reload: a `notify` watcher on the whole policies directory, plus a
//! periodic rescan that catches anything the watcher missed.
//!
//! The first event of a burst starts a reload at once, with no quiet window:
//! it only waits for the files the burst is still writing to be closed (at
//! most `debounce`, for writers that keep a file open or a platform that
//! reports no close). Events that arrive while a reload runs queue up and
//! make the next burst, reloaded as soon as the first one ends (a trailing
//! reload), so a burst of writes always ends on its last version.
//!
//! Each burst reloads only the layers it touched (`global/`, or one tenant's
//! folder); anything else — a Kubernetes ConfigMap swapping its `..data`
//! symlink, a `tenants/` folder created or removed — reloads everything.
//! Reloads compile on a blocking thread, never on the request path, and
//! publish only when something changed.
//!
//! File events can be turned off (`RETEN_POLICY_WATCH=false`, for a volume
//! whose events are unreliable or too many); the rescan runs either way.

use std::collections::{BTreeSet, HashSet};
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
    /// The longest a burst waits for a file it saw being written to be
    /// closed before it reloads anyway.
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

/// The events gathered for one reload: what they ask to reload, and the
/// files written but not yet closed.
struct Burst {
    wanted: Reload,
    open: HashSet<PathBuf>,
}

impl Burst {
    fn new() -> Self {
        Self { wanted: Reload::Scopes(BTreeSet::new()), open: HashSet::new() }
    }

    fn absorb(&mut self, root: &Path, event: notify::Result<notify::Event>) {
        if let Ok(event) = &event {
            track_open_writes(&mut self.open, event);
        }
        absorb(&mut self.wanted, root, event);
    }

    /// Takes every event already queued, then waits, at most `bound`, until
    /// no file of the burst is still being written.
    async fn settle(
        &mut self,
        root: &Path,
        rx: &mut mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
        bound: Duration,
    ) {
        while let Ok(event) = rx.try_recv() {
            self.absorb(root, event);
        }
        let deadline = tokio::time::Instant::now() + bound;
        while !self.open.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(event)) => self.absorb(root, event),
                // The bound passed, or the watcher is gone: reload what is there.
                Ok(None) | Err(_) => return,
            }
        }
    }
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
        let mut burst = Burst::new();
        burst.absorb(&root, first);
        burst.settle(&root, &mut rx, options.debounce).await;
        // Events that arrive during the reload wait in the channel: the next
        // turn of the loop takes them at once, as the trailing reload.
        reload(&registry, burst.wanted).await;
    }
}

/// Keeps `open` to the files an event stream shows being written and not
/// yet closed. Hidden files (editor swap and temp files, which the loader
/// never reads) are left out: an editor keeps its swap file open.
fn track_open_writes(open: &mut HashSet<PathBuf>, event: &notify::Event) {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
    for path in &event.paths {
        if path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.')) {
            continue;
        }
        match event.kind {
            EventKind::Create(CreateKind::File | CreateKind::Any)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                open.insert(path.clone());
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                open.remove(path);
            }
            _ => {}
        }
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
    fn a_file_is_being_written_from_its_first_write_to_its_close() {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind};
        let file = Path::new("/p/global/criteria/x.rhai");
        let ev = |kind, path: &Path| notify::Event::new(kind).add_path(path.to_owned());
        let mut open = HashSet::new();
        track_open_writes(&mut open, &ev(EventKind::Create(CreateKind::File), file));
        track_open_writes(&mut open, &ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), file));
        assert!(open.contains(file));
        track_open_writes(&mut open, &ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), file));
        assert!(open.is_empty(), "closed after writing");

        track_open_writes(&mut open, &ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), file));
        track_open_writes(&mut open, &ev(EventKind::Remove(RemoveKind::File), file));
        assert!(open.is_empty(), "a removed file is not waited for");

        let swap = Path::new("/p/global/criteria/.x.rhai.swp");
        track_open_writes(&mut open, &ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), swap));
        assert!(open.is_empty(), "an editor's swap file stays open: it is not waited for");
    }

    #[tokio::test]
    async fn a_burst_reloads_once_its_files_are_closed_without_a_quiet_window() {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, DataChange, ModifyKind};
        let root = Path::new("/p");
        let file = Path::new("/p/global/criteria/x.rhai");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut burst = Burst::new();
        burst.absorb(root, event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), file));
        tx.send(event(EventKind::Access(AccessKind::Close(AccessMode::Write)), file)).unwrap();
        // The sender stays open: settling must end on the close, not on a
        // closed channel, and well before this bound.
        tokio::time::timeout(Duration::from_secs(60), burst.settle(root, &mut rx, Duration::from_secs(600)))
            .await
            .expect("settled on the close");
        assert!(matches!(&burst.wanted, Reload::Scopes(s) if s.contains(&Scope::Global)));
        drop(tx);
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
