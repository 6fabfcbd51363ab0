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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use std::collections::BTreeSet;

use kproxy_core::convert::{
    ANNOTATION_LAST_CHANGE_TRIGGER_TIME, Inventory, Object, Store, parse_documents_lenient,
};
use kproxy_core::model::{NamespacedName, Timestamp};

/// A file as last read (its objects are its bucket in the store).
#[derive(Debug, Clone)]
struct Entry {
    mtime: Option<SystemTime>,
    len: u64,
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
    files: BTreeMap<PathBuf, Entry>,
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
            store: Store::new(),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Looks for added, changed and removed files and re-reads them.
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
        for p in gone {
            self.files.remove(&p);
            updates.push((p.display().to_string(), None));
            changes.files.push((p, now));
        }
        for p in paths {
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            let mtime = meta.modified().ok();
            let len = meta.len();
            if let Some(e) = self.files.get(&p)
                && e.mtime == mtime
                && e.len == len
            {
                continue;
            }
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
            self.files.insert(p.clone(), Entry { mtime, len });
            changes.files.push((p, mtime.unwrap_or(now)));
        }
        self.store.apply(updates);
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
}
