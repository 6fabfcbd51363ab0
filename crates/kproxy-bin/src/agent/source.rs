//! The `dir:PATH` source: a directory of manifests (the formats of `kproxy
//! compile`), polled for changes by modification time and size.
//!
//! Each file is parsed on its own: a document that does not parse is
//! reported and the file's last good objects are kept, so the rules
//! already applied for them stay (an invalid object among valid ones is
//! skipped by the conversion, as kube-proxy skips it).
//!
//! The objects are kept in a [`Store`], one bucket per file: a changed file
//! re-converts only the Services it touches, and [`DirSource::take_changed`]
//! names them for the incremental planner. (Of two files holding the same
//! object, the one whose path sorts later as a string wins.)
//!
//! A file is read only once it has stopped changing, so that a manifest
//! written in place is never read half written: when its size, modification
//! time and inode are the same at two polls in a row ([`Stat::settled`]), or
//! at once when it was written by rename (a new inode whose change time is
//! after its modification time: written elsewhere, then renamed into place,
//! which is atomic). Until then the file's last objects stay.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use std::collections::BTreeSet;

use kproxy_core::convert::{
    ANNOTATION_LAST_CHANGE_TRIGGER_TIME, Inventory, Object, Store, parse_documents_lenient,
};
use kproxy_core::model::{NamespacedName, Timestamp};

/// What one poll saw of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Modification time.
    pub mtime: Option<SystemTime>,
    /// Size in bytes.
    pub len: u64,
    /// Device and inode (a rename puts a new inode at the path).
    pub inode: (u64, u64),
    /// Status change time (ns since the epoch): a rename sets it, a write
    /// sets it with the modification time.
    pub ctime_ns: i128,
    /// Modification time (ns since the epoch).
    pub mtime_ns: i128,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Self {
            mtime: meta.modified().ok(),
            len: meta.len(),
            inode: (meta.dev(), meta.ino()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        }
    }

    /// Whether the file holds the same content as when it was last read
    /// (`read`), as far as its metadata tells.
    fn same_as(&self, read: &Stat) -> bool {
        self.mtime == read.mtime && self.len == read.len && self.inode == read.inode
    }

    /// Whether a file seen as `self` now (changed since it was last read,
    /// `read`; `None`: never read) may be read: it was seen the same at the
    /// previous poll (`previous`), or it was written by rename (another
    /// inode than the one read, changed after its last write).
    pub fn settled(&self, previous: Option<&Stat>, read: Option<&Stat>) -> bool {
        let renamed = read.is_none_or(|r| r.inode != self.inode) && self.ctime_ns > self.mtime_ns;
        renamed || previous.is_some_and(|p| p == self)
    }
}

/// What a poll found.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Files added, changed or removed, with their modification time (the
    /// time of the change, for network programming latency).
    pub files: Vec<(PathBuf, SystemTime)>,
    /// Problems to report (unreadable files, documents that do not parse).
    pub errors: Vec<String>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// A watched directory.
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    /// The files read, as they were when read.
    files: BTreeMap<PathBuf, Stat>,
    /// Files changed since they were read (or new), as the last poll saw
    /// them: read once they stop changing.
    pending: BTreeMap<PathBuf, Stat>,
    /// Every file found has been read once (see [`Self::settled`]).
    settled: bool,
    store: Store,
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Editors' and kubectl's temporary files, ConfigMap mounts' `..data`.
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_manifest(&p) {
            out.push(p);
        }
    }
    Ok(())
}

impl DirSource {
    /// A source reading `root` (not read yet: call [`Self::poll`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
            pending: BTreeMap::new(),
            settled: false,
            store: Store::new(),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether every file has been read at least once since the start (no
    /// file was still being written): the first sync waits for it.
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// The files changed but not read yet (still changing).
    pub fn pending(&self) -> impl Iterator<Item = &Path> {
        self.pending.keys().map(PathBuf::as_path)
    }

    /// Looks for added, changed and removed files and re-reads those that
    /// stopped changing (see the [module docs](self)).
    pub fn poll(&mut self) -> Changes {
        let mut changes = Changes::default();
        let mut paths = Vec::new();
        if let Err(e) = walk(&self.root, &mut paths) {
            changes.errors.push(format!(
                "{}: cannot read directory: {e}",
                self.root.display()
            ));
            // Keep the last state: a transient error must not drop every Service.
            return changes;
        }
        paths.sort();
        let now = SystemTime::now();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| paths.binary_search(p).is_err())
            .cloned()
            .collect();
        let mut updates: Vec<(String, Option<Vec<Object>>)> = Vec::new();
        self.pending.retain(|p, _| paths.binary_search(p).is_ok());
        for p in gone {
            self.files.remove(&p);
            updates.push((p.display().to_string(), None));
            changes.files.push((p, now));
        }
        for p in paths {
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            let stat = Stat::of(&meta);
            let read = self.files.get(&p);
            if read.is_some_and(|r| stat.same_as(r)) {
                self.pending.remove(&p);
                continue;
            }
            if !stat.settled(self.pending.get(&p), read) {
                self.pending.insert(p, stat);
                continue;
            }
            self.pending.remove(&p);
            let mtime = stat.mtime;
            let name = p.display().to_string();
            let objects = match std::fs::read_to_string(&p) {
                Ok(text) => {
                    let (objects, errors) = parse_documents_lenient(&text, &name);
                    changes.errors.extend(errors.iter().map(|e| e.to_string()));
                    if objects.is_empty() && !errors.is_empty() {
                        // Nothing usable: keep what the file held before.
                        self.store
                            .objects(&name)
                            .map(<[Object]>::to_vec)
                            .unwrap_or_default()
                    } else {
                        objects
                    }
                }
                Err(e) => {
                    changes
                        .errors
                        .push(format!("{name}: cannot read file: {e}"));
                    continue;
                }
            };
            updates.push((name, Some(objects)));
            self.files.insert(p.clone(), stat);
            changes.files.push((p, mtime.unwrap_or(now)));
        }
        self.store.apply(updates);
        self.settled |= self.pending.is_empty();
        changes
    }

    /// The Services whose objects changed since the last call (`None`:
    /// anything may have, e.g. a Node or the configuration changed).
    pub fn take_changed(&mut self) -> Option<BTreeSet<NamespacedName>> {
        self.store.take_changed()
    }

    /// Whether the file at `path` holds an EndpointSlice with a valid
    /// `endpoints.kubernetes.io/last-change-trigger-time` (its changes are
    /// timed by that, not by the file's modification time).
    pub fn has_trigger_time(&self, path: &Path) -> bool {
        let objects = self.store.objects(&path.display().to_string());
        objects.is_some_and(|objects| {
            objects.iter().any(|o| match o {
                Object::EndpointSlice(es) => es
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_LAST_CHANGE_TRIGGER_TIME))
                    .is_some_and(|t| t.parse::<Timestamp>().is_ok()),
                _ => false,
            })
        })
    }

    /// The objects of every file, converted (invalid objects skipped, with
    /// warnings in the inventory).
    pub fn inventory(&self) -> &Inventory {
        self.store.inventory()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_with_annotated_slices() {
        let dir = std::env::temp_dir().join(format!("kproxy-dirsource-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let slice = |name: &str, annotation: &str| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: {name}, labels: {{kubernetes.io/service-name: web}}{annotation}}}\n\
                 addressType: IPv4\nendpoints: [{{addresses: [10.0.0.1]}}]\n"
            )
        };
        let at = ", annotations: {endpoints.kubernetes.io/last-change-trigger-time: '2026-11-26T10:00:00Z'}";
        let bad = ", annotations: {endpoints.kubernetes.io/last-change-trigger-time: 'soon'}";
        std::fs::write(dir.join("a.yaml"), slice("a", at)).expect("write");
        std::fs::write(dir.join("b.yaml"), slice("b", "")).expect("write");
        std::fs::write(dir.join("c.yaml"), slice("c", bad)).expect("write");
        let mut src = DirSource::new(&dir);
        // Written in place: read at the second poll.
        assert!(src.poll().is_empty());
        let changes = src.poll();
        assert_eq!(changes.files.len(), 3);
        assert!(src.has_trigger_time(&dir.join("a.yaml")));
        assert!(!src.has_trigger_time(&dir.join("b.yaml")));
        assert!(!src.has_trigger_time(&dir.join("c.yaml")));
        assert!(!src.has_trigger_time(&dir.join("gone.yaml")));
        let slices = &src.inventory().state.endpoint_slices;
        assert!(slices[0].trigger_time.is_some());
        assert!(slices[1].trigger_time.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn service(name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
        )
    }

    fn names(src: &DirSource) -> Vec<String> {
        src.inventory()
            .state
            .services
            .iter()
            .map(|s| s.id.name.clone())
            .collect()
    }

    /// A manifest written in place is read only once it stops changing
    /// (the polls are driven here, one by one); one written by rename is
    /// read at once.
    #[test]
    fn half_written_manifests_are_not_read() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("kproxy-dirsettle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("web.yaml");
        // Half written: the first of two documents, which parses alone.
        let full = format!(
            "{}---\n{}",
            service("web", "10.0.0.1"),
            service("api", "10.0.0.2")
        );
        let half = full.len() - 30;
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(&full.as_bytes()[..half]).expect("write");
        f.flush().expect("flush");
        let mut src = DirSource::new(&dir);
        let c = src.poll();
        assert!(c.is_empty() && names(&src).is_empty(), "read half written");
        assert!(!src.settled());
        assert_eq!(src.pending().count(), 1);
        // The rest comes: still changing at the next poll, read at the one
        // after.
        f.write_all(&full.as_bytes()[half..]).expect("write");
        f.flush().expect("flush");
        assert!(src.poll().is_empty() && names(&src).is_empty());
        assert_eq!(src.poll().files.len(), 1);
        assert_eq!(names(&src), ["api", "web"]);
        assert!(src.settled() && src.pending().count() == 0);
        // Rewritten in place: the last objects stay until it settles.
        let mut f = std::fs::File::create(&path).expect("truncate");
        f.write_all(service("web", "10.0.0.1").as_bytes())
            .expect("write");
        f.flush().expect("flush");
        assert!(src.poll().is_empty());
        assert_eq!(names(&src), ["api", "web"]);
        assert_eq!(src.poll().files.len(), 1);
        assert_eq!(names(&src), ["web"]);
        assert!(src.poll().is_empty(), "read once");
        // Written elsewhere and renamed into place: read at the first poll.
        let tmp = dir.join(".db.yaml.tmp");
        std::fs::write(&tmp, service("db", "10.0.0.3")).expect("write");
        let past = SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .and_then(|f| f.set_modified(past))
            .expect("mtime");
        assert!(src.poll().is_empty(), "dot files are not manifests");
        std::fs::rename(&tmp, dir.join("db.yaml")).expect("rename");
        assert_eq!(src.poll().files.len(), 1);
        assert_eq!(names(&src), ["db", "web"]);
        // Removed: at once.
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(src.poll().files.len(), 1);
        assert_eq!(names(&src), ["db"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
