//! How gollum (gitlab-gollum-lib 4.2.7.10, which upstream v13.12.0's Ruby wiki code runs on) lays out a
//! wiki: which files are pages and in which markup, how a title becomes a file name and a file name a
//! title, and how a title is looked up. A wiki GitLab wrote through upstream must read back identically
//! here and the other way round, so these are gollum's rules, quirks included (the lookup treats spaces,
//! `-`, `<`, `>` and `+` alike; a title `a b-c` is stored as `a-b-c` and reads back as `a b c`).

/// The markups in gollum's matching order, each with the extensions it claims (matched as substrings of
/// the extension, as gollum's unanchored patterns do) and the one it writes.
const FORMATS: &[(&str, &[&str])] = &[
    ("markdown", &["md", "mkd", "mdown", "markdown"]),
    ("textile", &["textile"]),
    ("rdoc", &["rdoc"]),
    ("org", &["org"]),
    ("creole", &["creole"]),
    ("rest", &["rst", "rest"]),
    ("asciidoc", &["adoc", "asciidoc"]),
    ("mediawiki", &["wiki"]),
    ("pod", &["pod"]),
    ("txt", &["txt"]),
];

/// Whether gollum knows the format (upstream writes an unknown one as it is, e.g. `x.foo`, a file that is
/// then no page; rgitaly refuses it).
pub fn known_format(format: &str) -> bool {
    FORMATS.iter().any(|(f, _)| *f == format)
}

/// The extension gollum writes for a format (`md` for markdown, else the format's own name).
pub fn ext_for(format: &str) -> &str {
    if format == "markdown" {
        "md"
    } else {
        format
    }
}

/// A file name's stem and extension, as gollum splits it: the extension follows the last dot and is an
/// ASCII letter then ASCII word characters; the stem is not empty.
fn split_ext(filename: &[u8]) -> Option<(&[u8], &[u8])> {
    if filename.contains(&b'\n') {
        return None;
    }
    let dot = filename.iter().rposition(|b| *b == b'.')?;
    let (stem, ext) = (&filename[..dot], &filename[dot + 1..]);
    let word =
        ext.first().is_some_and(u8::is_ascii_alphabetic) && ext.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    (!stem.is_empty() && word).then_some((stem, ext))
}

/// The markup of a file, by its name; None when it is no page.
pub fn format_of(filename: &[u8]) -> Option<&'static str> {
    let (_, ext) = split_ext(filename)?;
    let ext = std::str::from_utf8(ext).ok()?;
    FORMATS.iter().find(|(_, exts)| exts.iter().any(|e| ext.contains(e))).map(|(f, _)| *f)
}

/// Whether a file is listed as a page (gollum's `valid_page_name?`): a page file not starting with `_`
/// (`_Sidebar`, `_Footer` are found by title but not listed).
pub fn is_listed(filename: &[u8]) -> bool {
    format_of(filename).is_some() && !filename.starts_with(b"_")
}

/// The file name without its last extension (gollum's `strip_filename`).
pub fn strip_ext(filename: &[u8]) -> &[u8] {
    match filename.iter().rposition(|b| *b == b'.') {
        Some(dot) => &filename[..dot],
        None => filename,
    }
}

/// A page's name and title: the file name without extension, dashes read as spaces.
pub fn title_of(filename: &[u8]) -> Vec<u8> {
    strip_ext(filename).iter().map(|b| if *b == b'-' { b' ' } else { *b }).collect()
}

/// gollum's `cname`: whitespace becomes `white`, and `<`, `>`, `+` become `-`.
pub fn cname(s: &str, white: char) -> String {
    s.chars()
        .map(|c| match c {
            ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' => white,
            '<' | '>' | '+' => '-',
            c => c,
        })
        .collect()
}

/// Ruby's `downcase`: per character, without the final-sigma rule `str::to_lowercase` applies.
fn downcase(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// A page's URL path: its directory as stored, then its name through `cname`.
pub fn url_path(path: &[u8]) -> String {
    let (dir, filename) = split_path(path);
    let name = cname(&String::from_utf8_lossy(&title_of(filename)), '-');
    if dir.is_empty() {
        name
    } else {
        format!("{}/{name}", String::from_utf8_lossy(dir))
    }
}

/// A tree path's directory ("" at the root) and file name.
pub fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// A lookup of a page by its query (see [`lookup_query`]): what a file's path without extension must
/// come to, through `cname` and ignoring case, to be the page it finds.
pub struct Lookup {
    want: String,
}

impl Lookup {
    pub fn new(query: &str) -> Self {
        Lookup { want: downcase(&cname(query, '-')) }
    }

    /// Whether the file at `path` is the page: its path without extension through `cname` (whitespace as
    /// `_` or as `-`), ignoring case.
    pub fn matches(&self, path: &[u8]) -> bool {
        let (dir, filename) = split_path(path);
        let mut candidate = String::from_utf8_lossy(dir).into_owned();
        if !candidate.is_empty() {
            candidate.push('/');
        }
        candidate.push_str(&String::from_utf8_lossy(strip_ext(filename)));
        same_name(&candidate, &self.want)
    }

    /// Whether the page may be below the directory at `dir`: neither `cname` nor `downcase` makes or takes
    /// a `/`, so each of its components must be the wanted path's at the same depth, and the wanted path
    /// must go deeper. A lookup enters no other directory.
    pub fn may_be_under(&self, dir: &[u8]) -> bool {
        let dir = String::from_utf8_lossy(dir);
        let mut want = self.want.split('/');
        dir.split('/').all(|have| want.next().is_some_and(|w| same_name(have, w))) && want.next().is_some()
    }
}

/// Whether a stored name (or path) is `want` (a lookup's, through `cname` and `downcase`): through
/// `cname` with whitespace as `_` or as `-`, ignoring case.
fn same_name(have: &str, want: &str) -> bool {
    ['_', '-'].iter().any(|sub| downcase(&cname(have, *sub)) == want)
}

/// What a lookup of `title` in directory `dir` searches for: the directory (no leading, trailing or
/// repeated slashes; `.` and `/` alone mean the root) joined with the title.
pub fn lookup_query(title: &[u8], dir: &[u8]) -> String {
    let dir = String::from_utf8_lossy(dir);
    let title = String::from_utf8_lossy(title);
    let parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    let mut query = if dir.chars().all(|c| c == '.' || c == '/') { String::new() } else { parts.join("/") };
    let title = title.trim_start_matches('/');
    if !query.is_empty() && !title.is_empty() {
        query.push('/');
    }
    query.push_str(title);
    query
}

/// The lookup a page path means (`dir/My-Page.md` → title "My Page" in `dir`), as upstream finds the page
/// an update, delete or history names.
pub fn query_for_path(page_path: &[u8]) -> String {
    let trimmed = trim_trailing_slashes(page_path);
    let (dir, filename) = split_path(trimmed);
    lookup_query(&title_of(filename), dir)
}

fn trim_trailing_slashes(p: &[u8]) -> &[u8] {
    let mut end = p.len();
    while end > 1 && p[end - 1] == b'/' {
        end -= 1;
    }
    &p[..end]
}

/// Where a new page named `name` (maybe with directories) in `format` is written: Ruby's `File.dirname`
/// and `File.basename` of the name, spaces as dashes, the format's extension, no leading slash. None when
/// the result is no safe tree path (`..`, `.git`, an empty file name, NUL).
pub fn new_page_path(name: &[u8], format: &str) -> Option<Vec<u8>> {
    let name = trim_trailing_slashes(name);
    let (dir, file) = split_path(name);
    if file.is_empty() || !known_format(format) {
        return None;
    }
    let dashed = |b: &[u8]| -> Vec<u8> { b.iter().map(|c| if *c == b' ' { b'-' } else { *c }).collect() };
    let mut path = Vec::new();
    for component in dir.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".") {
        path.extend_from_slice(&dashed(component));
        path.push(b'/');
    }
    path.extend_from_slice(&dashed(file));
    path.push(b'.');
    path.extend_from_slice(ext_for(format).as_bytes());
    safe_tree_path(&path).then_some(path)
}

/// A path git can hold in a tree and that stays where it says (see `odb::write::valid_tree_path`: no
/// empty, `.`, `..` or `.git` component in any spelling, no NUL).
pub fn safe_tree_path(path: &[u8]) -> bool {
    rgitaly::odb::write::valid_tree_path(path)
}

/// gollum's duplicate check: a file in the same directory whose name, without its last `.word`
/// extension and ignoring case, is the new page's.
pub fn same_page_name(existing: &[u8], new: &[u8]) -> bool {
    let base = |f: &[u8]| -> String {
        let s = String::from_utf8_lossy(f).into_owned();
        let stem = match s.rfind('.') {
            Some(i) if s[i + 1..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && i + 1 < s.len() => {
                s[..i].to_string()
            }
            _ => s,
        };
        downcase(&stem)
    };
    base(existing) == base(new)
}

/// Page text as upstream returns it: UTF-8 as it is; anything else without its invalid bytes and NULs.
pub fn text_data(raw: Vec<u8>) -> Vec<u8> {
    if std::str::from_utf8(&raw).is_ok() {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        out.extend(chunk.valid().bytes().filter(|b| *b != 0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension_in_gollums_order() {
        for (file, want) in [
            ("a.md", Some("markdown")),
            ("a.mkdn", Some("markdown")),
            ("a.markdown", Some("markdown")),
            ("a.rmd", Some("markdown")),
            ("a.textile", Some("textile")),
            ("a.rdoc", Some("rdoc")),
            ("a.org", Some("org")),
            ("a.creole", Some("creole")),
            ("a.rst", Some("rest")),
            ("a.rest", Some("rest")),
            ("a.first", Some("rest")),
            ("a.adoc", Some("asciidoc")),
            ("a.asciidoc", Some("asciidoc")),
            ("a.wiki", Some("mediawiki")),
            ("a.mediawiki", Some("mediawiki")),
            ("a.pod", Some("pod")),
            ("a.podcast", Some("pod")),
            ("a.txt", Some("txt")),
            ("a.rest.txt", Some("txt")),
            ("a.MD", None),
            ("a.text", None),
            ("a.html", None),
            ("a.1", None),
            ("a", None),
            (".md", None),
        ] {
            assert_eq!(format_of(file.as_bytes()), want, "{file}");
        }
        assert!(format_of(b"_Sidebar.md").is_some() && !is_listed(b"_Sidebar.md"));
        assert_eq!(ext_for("markdown"), "md");
        assert_eq!(ext_for("asciidoc"), "asciidoc");
    }

    #[test]
    fn names_titles_and_url_paths() {
        assert_eq!(title_of(b"My-Page.md"), b"My Page");
        assert_eq!(title_of(b"a.rest.txt"), b"a.rest");
        assert_eq!(url_path(b"dir/My-Page.md"), "dir/My-Page");
        assert_eq!(url_path("Instálling-Gitaly.md".as_bytes()), "Instálling-Gitaly");
        assert_eq!(url_path(b"a+b.md"), "a-b");
        assert_eq!(url_path(b"Lit Space.md"), "Lit-Space");
        assert_eq!(cname("a b\tc<d>e+f/g_h.i", '-'), "a-b-c-d-e-f/g_h.i");
    }

    #[test]
    fn lookups_as_gollum_matches() {
        let q = |t: &str, d: &str| lookup_query(t.as_bytes(), d.as_bytes());
        let matches = |q: &str, path: &[u8]| Lookup::new(q).matches(path);
        assert!(matches(&q("My Page", ""), b"My-Page.md"));
        assert!(matches(&q("my-page", ""), b"My-Page.md"));
        assert!(!matches(&q("My Page", ""), b"My_Page.md"));
        assert!(!matches(&q("Home.md", ""), b"Home.md"));
        for t in ["a b", "a-b", "a<b"] {
            assert!(matches(&q(t, ""), b"a+b.md"), "{t}");
        }
        assert!(matches(&q("foo/page1", ""), b"foo/page1.md"));
        assert!(matches(&q("page1", "foo"), b"foo/page1.md"));
        assert!(matches(&q("page1", "/foo/"), b"foo/page1.md"));
        assert!(matches(&q("page1", "FOO"), b"foo/page1.md"));
        assert!(!matches(&q("page1", ""), b"foo/page1.md"));
        assert!(matches(&q("page1", "."), b"page1.md"));
        assert!(matches(&q("ΣΟΦΟΣ", ""), "σοφοσ.md".as_bytes()));
        assert!(!matches(&q("ΣΟΦΟΣ", ""), "σοφος.md".as_bytes()));
        assert_eq!(query_for_path(b"dir/My-Page.md"), "dir/My Page");
        // Where a lookup looks: the directories its path goes through, either way of `cname`.
        let under = |q: &str, dir: &str| Lookup::new(q).may_be_under(dir.as_bytes());
        assert!(under("Foo Bar/Baz/page", "foo bar"));
        assert!(under("Foo Bar/Baz/page", "foo-bar/BAZ"));
        assert!(under("foo_bar/page", "Foo Bar"));
        assert!(!under("Foo Bar/Baz/page", "foo_bar"), "an underscore is no space");
        assert!(!under("Foo Bar/Baz/page", "foo-bar/baz/page"), "no deeper than the page");
        assert!(!under("Foo Bar/Baz/page", "baz"));
        assert!(!under("page", "page"), "a root lookup enters no directory");
        assert!(under("ΣΟΦΟΣ/x", "σοφοσ"));
        assert_eq!(query_for_path("//Instálling Gitaly".as_bytes()), "Instálling Gitaly");
    }

    #[test]
    fn new_page_paths() {
        let p = |n: &str, f: &str| new_page_path(n.as_bytes(), f).map(|p| String::from_utf8(p).unwrap());
        assert_eq!(p("dir/My Page", "markdown").as_deref(), Some("dir/My-Page.md"));
        assert_eq!(p("foo bar/x", "markdown").as_deref(), Some("foo-bar/x.md"));
        assert_eq!(p("/abs/z", "markdown").as_deref(), Some("abs/z.md"));
        assert_eq!(p("q//w", "markdown").as_deref(), Some("q/w.md"));
        assert_eq!(p("./y", "markdown").as_deref(), Some("y.md"));
        assert_eq!(p("trail/", "markdown").as_deref(), Some("trail.md"));
        assert_eq!(p("a<b>+c", "rdoc").as_deref(), Some("a<b>+c.rdoc"));
        assert_eq!(p("../etc/x", "markdown"), None);
        assert_eq!(p(".git/config", "markdown"), None);
        assert_eq!(p("x\0y", "markdown"), None);
        assert_eq!(p("/", "markdown"), None, "no file name");
        assert_eq!(p("//", "markdown"), None);
        assert_eq!(p("x", "gitmodules"), None, "no such format");
        assert_eq!(p(".git./x", "markdown"), None);
        assert_eq!(p("git~1/x", "markdown"), None);
    }

    #[test]
    fn duplicates_and_text() {
        assert!(same_page_name(b"Home.md", b"home.textile"));
        assert!(same_page_name(b"logo.png", b"logo.md"));
        assert!(!same_page_name(b"My-Page.md", b"my_page.md"));
        assert_eq!(text_data(b"f\xFCr\0".to_vec()), b"fr");
        assert_eq!(text_data("für\0".as_bytes().to_vec()), "für\0".as_bytes());
    }
}
