//! Reading the PATH arguments: files, directories (recursively) and stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

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
