//! Shared by the bench binaries: each one rewrites only its own section of
//! BENCHMARKS.md, between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.

use std::path::Path;

pub fn write_section(name: &str, body: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &text[..b], block, &text[e + end.len()..]),
        _ => format!("{}\n\n{}\n", text.trim_end(), block),
    };
    std::fs::write(&path, new).expect("writing BENCHMARKS.md");
    eprintln!("wrote the {name} section of {}", path.display());
}
