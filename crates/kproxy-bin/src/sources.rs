//! Reading the PATH arguments: files, directories (recursively) and stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kproxy_core::convert::{Object, parse_documents};

use crate::progress::Stage;

/// One input text and the name it is reported under.
#[derive(Debug, Clone)]
pub struct Source {
    /// File name (or `-` for stdin).
    pub name: String,
    /// Contents.
    pub text: String,
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read directory", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_manifest(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads every PATH: a file, a directory (its `*.yaml`, `*.yml`, `*.json`,
/// recursively, in name order) or `-` for stdin.
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("-: cannot read standard input")?;
            out.push(Source {
                name: "-".into(),
                text,
            });
            continue;
        }
        if !p.exists() {
            bail!("{}: no such file or directory", p.display());
        }
        let files = if p.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files)?;
            files
        } else {
            vec![p.clone()]
        };
        for f in files {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("{}: cannot read file", f.display()))?;
            out.push(Source {
                name: f.display().to_string(),
                text,
            });
        }
    }
    Ok(out)
}

/// Reads and parses every PATH (see [`read_sources`]) into its objects,
/// each with the name of its source, showing the progress of the parse.
/// The first unparsable document is an error.
pub fn parse_sources(paths: &[PathBuf]) -> Result<Vec<(String, Object)>> {
    let sources = read_sources(paths)?;
    let total: usize = sources.iter().map(|s| s.text.len()).sum();
    let stage = Stage::bytes("parsing", total as u64);
    let mut objects = Vec::new();
    for src in sources {
        stage.set_message(&format!("parsing {}", src.name));
        let docs = parse_documents(&src.text, &src.name)?;
        stage.inc(src.text.len() as u64);
        objects.extend(docs.into_iter().map(|o| (src.name.clone(), o)));
    }
    Ok(objects)
}
