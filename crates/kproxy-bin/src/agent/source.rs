//! The `dir:PATH` source: a directory of manifests (the formats of `kproxy
//! compile`), polled for changes by modification time and size.
//!
//! Each file is parsed on its own: a document that does not parse is
//! reported and the file's last good objects are kept, so the rules
//! already applied for them stay (an invalid object among valid ones is
//! skipped by the conversion, as kube-proxy skips it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kproxy_core::convert::{Inventory, Object, inventory, parse_documents_lenient};

#[derive(Debug, Clone)]
struct Entry {
    mtime: Option<SystemTime>,
    len: u64,
    objects: Vec<Object>,
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
        for p in gone {
            self.files.remove(&p);
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
                        self.files
                            .get(&p)
                            .map(|e| e.objects.clone())
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
            self.files.insert(
                p.clone(),
                Entry {
                    mtime,
                    len,
                    objects,
                },
            );
            changes.files.push((p, mtime.unwrap_or(now)));
        }
        changes
    }

    /// The objects of every file, converted (invalid objects skipped, with
    /// warnings in the inventory).
    pub fn inventory(&self) -> Inventory {
        inventory(self.files.iter().flat_map(|(p, e)| {
            let name = p.display().to_string();
            e.objects.iter().map(move |o| (name.clone(), o.clone()))
        }))
    }
}
