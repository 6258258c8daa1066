//! Test support: fake sysfs trees from the data files in
//! `tests/fixtures/sysfs/` (format described in its README).

use std::path::Path;

/// Builds the tree described by `tests/fixtures/sysfs/<name>` in a new
/// temporary directory.
pub fn materialize(name: &str) -> tempfile::TempDir {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sysfs")
        .join(name);
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", file.display()));
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(d) = line.strip_suffix('/')
            && !line.contains(" =")
        {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
            continue;
        }
        let (path, content) = line
            .split_once(" =")
            .unwrap_or_else(|| panic!("{}:{}: expected `path = content`", file.display(), i + 1));
        let content = content.strip_prefix(' ').unwrap_or(content);
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, format!("{content}\n")).expect("write");
    }
    dir
}
