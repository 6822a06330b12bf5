// Every relative link of README.md and docs/*.md leads somewhere: the file exists and,
// for `#anchor`, that file has a heading whose GitHub slug is the anchor. Links to
// http(s):// and mailto: addresses are not checked, nor links inside code blocks or
// inline code. No database needed.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root")
}

/// The Markdown files checked: README.md and every docs/*.md.
fn pages() -> Vec<PathBuf> {
    let root = root();
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The lines of a Markdown text outside fenced code blocks, with their numbers (1-based).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = if trimmed.starts_with("```") {
            Some("```")
        } else if trimmed.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// GitHub's anchor for a heading: lowercase; characters other than letters, digits,
/// spaces, hyphens and underscores dropped; spaces become hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings; a repeated heading gets `-1`, `-2`... as on GitHub.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim_end_matches(['#', ' ']));
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// A line without its inline code spans (`` `a](b)` `` is code, not a link).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for part in line.split('`') {
        if !in_code {
            out.push_str(part);
        } else {
            out.push(' ');
        }
        in_code = !in_code;
    }
    out
}

/// The targets of a page's inline links `[label](target)` outside code, with their line
/// numbers. A label may span lines (`[Python task code\nreference](#...)`), so the
/// prose is scanned as one text.
fn links(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<(usize, String)> = prose_lines(text)
        .into_iter()
        .map(|(n, l)| (n, without_code_spans(l)))
        .collect();
    let mut out = Vec::new();
    for (k, (number, line)) in lines.iter().enumerate() {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            // Only a `]` that closes a `[` on this line or an earlier line of the paragraph.
            let before = &rest[..at];
            let opened = before.contains('[')
                || (k > 0 && lines[k - 1].0 + 1 == *number && lines[k - 1].1.contains('['));
            let target = after[..end].split_whitespace().next().unwrap_or("");
            if opened && !target.is_empty() {
                out.push((*number, target.to_string()));
            }
            rest = &after[end..];
        }
    }
    out
}

/// What is wrong with a link of `page`, if anything.
fn problem(
    page: &Path,
    target: &str,
    cache: &mut Vec<(PathBuf, HashSet<String>)>,
) -> Option<String> {
    if target.starts_with("http://")
        || target.starts_with("https://")
        || target.starts_with("mailto:")
    {
        return None;
    }
    let (file, anchor) = match target.split_once('#') {
        Some((f, a)) => (f, Some(a)),
        None => (target, None),
    };
    let file = if file.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().expect("a page's folder").join(file)
    };
    let Ok(file) = file.canonicalize() else {
        return Some("no such file".to_string());
    };
    let anchor = anchor?;
    if file.is_dir() || file.extension().is_none_or(|e| e != "md") {
        return Some("an anchor into a file that is not Markdown".to_string());
    }
    let at = match cache.iter().position(|(p, _)| *p == file) {
        Some(at) => at,
        None => {
            let text = std::fs::read_to_string(&file).expect("a linked page");
            cache.push((file.clone(), anchors(&text)));
            cache.len() - 1
        }
    };
    let known = &cache[at].1;
    (!known.contains(anchor)).then(|| "no heading with that anchor".to_string())
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug("Five-minute tutorial"), "five-minute-tutorial");
    assert_eq!(
        slug("Projects: export and import"),
        "projects-export-and-import"
    );
    assert_eq!(slug("Downloads: `url2base64`"), "downloads-url2base64");
    assert_eq!(slug("GitHub ↔ Trello"), "github--trello");
    assert_eq!(
        slug("Columns of `sync.db_trigger`"),
        "columns-of-syncdb_trigger"
    );
    let a = anchors("# Links\n\n```sh\n# Links\n```\n## Links\n### Links\n");
    let mut a: Vec<_> = a.into_iter().collect();
    a.sort();
    assert_eq!(a, ["links", "links-1", "links-2"]);
    let l = links(
        "[a](x.md) `[b](y.md)` [c\nd](#e)\n```\n[f](g.md)\n```\n`f['x'](item)` [h](https://x)\n",
    );
    let l: Vec<&str> = l.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(l, ["x.md", "#e", "https://x"]);
}

#[test]
fn every_relative_link_of_the_docs_leads_somewhere() {
    let root = root();
    let mut cache = Vec::new();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("a page");
        for (line, target) in links(&text) {
            checked += 1;
            if let Some(why) = problem(&page, &target, &mut cache) {
                let name = page.strip_prefix(&root).unwrap_or(&page).display();
                broken.push(format!("{name}:{line}: ({target}): {why}"));
            }
        }
    }
    assert!(checked > 30, "only {checked} links found");
    assert!(
        broken.is_empty(),
        "{} broken links:\n{}",
        broken.len(),
        broken.join("\n")
    );
}
