//! The shape of a client's patch series, read before `git am` sees it.
//!
//! UserApplyPatch hands a client's `git format-patch` output to `git am`. As with a bundle, the bytes must be
//! what they claim before git reads them: mail messages as format-patch writes them, split where
//! `git mailsplit` splits, each with an author and a subject, and diffs whose every path — in `diff --git`,
//! `---`/`+++`, rename and copy lines, quoted or not — is a clean path inside the tree (no `..`, no `.git`,
//! not absolute, no NUL or line break once unquoted). Hunks are read by their line counts, as `git apply`
//! reads them, so a content line that looks like a header is content here too. git applies the same path
//! rules itself; this check refuses the series before anything runs, with a reason, and makes the reading
//! of "which files does this touch" ours rather than a guess.

/// One message of a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// The commit named on the message's `From <oid> Mon Sep 17 00:00:00 2001` line.
    pub commit: String,
    /// The `From:` header's value (as written; continuation lines joined).
    pub author: Vec<u8>,
    /// The `Subject:` header's value.
    pub subject: Vec<u8>,
    /// Paths the diffs name (after `a/` / `b/`), in order, each once per line that names it.
    pub paths: Vec<Vec<u8>>,
}

/// Why bytes are not a patch series.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("not a patch series from git format-patch")]
    NotAPatch,
    #[error("invalid patch {index}: {reason}")]
    Malformed { index: usize, reason: String },
}

/// The date format-patch writes on every message's first line.
const MAGIC_DATE: &[u8] = b" Mon Sep 17 00:00:00 2001";

/// Reads a whole series.
pub fn parse(mbox: &[u8]) -> Result<Vec<Patch>, PatchError> {
    let mut lines: Lines<'_> = mbox.split_inclusive(is_newline as fn(&u8) -> bool).peekable();
    let mut patches = Vec::new();
    let first = lines.peek().copied().unwrap_or_default();
    if separator(strip_eol(first)).is_none() {
        return Err(PatchError::NotAPatch);
    }
    while let Some(line) = lines.next() {
        let index = patches.len() + 1;
        let bad = |reason: String| PatchError::Malformed { index, reason };
        let commit = separator(strip_eol(line)).ok_or_else(|| bad("message does not start with a From line".into()))?;
        let mut patch = Patch { commit, author: Vec::new(), subject: Vec::new(), paths: Vec::new() };
        read_headers(&mut lines, &mut patch).map_err(bad)?;
        read_body(&mut lines, &mut patch).map_err(bad)?;
        patches.push(patch);
    }
    Ok(patches)
}

/// The commit on a format-patch separator line, `From <40 or 64 hex> Mon Sep 17 00:00:00 2001`.
fn separator(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(b"From ")?;
    let oid = rest.strip_suffix(MAGIC_DATE)?;
    let hex = |b: &u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
    ((oid.len() == 40 || oid.len() == 64) && oid.iter().all(hex)).then(|| String::from_utf8(oid.to_vec()).unwrap())
}

/// Whether `git mailsplit` would start a new message at this line (its `is_from_line`): `From `, then
/// somewhere a `hh:mm:ss`-like colon and a year after 90.
fn mailsplit_would_split(line: &[u8]) -> bool {
    if line.len() < 20 || !line.starts_with(b"From ") {
        return false;
    }
    let Some(colon) = line[5..line.len() - 1].iter().rposition(|b| *b == b':').map(|p| p + 5) else { return false };
    let digit = |i: isize| line.get(colon.wrapping_add_signed(i)).is_some_and(u8::is_ascii_digit);
    if colon < 4 || ![-4, -2, -1, 1, 2].into_iter().all(digit) {
        return false;
    }
    // strtol: leading whitespace, then digits.
    let year = line.get(colon + 3..).unwrap_or_default().trim_ascii_start();
    let year: Vec<u8> = year.iter().take_while(|b| b.is_ascii_digit()).copied().collect();
    std::str::from_utf8(&year).ok().and_then(|y| y.parse::<u64>().ok()).is_some_and(|y| y > 90)
}

fn is_newline(b: &u8) -> bool {
    *b == b'\n'
}

fn strip_eol(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

type Lines<'a> = std::iter::Peekable<std::slice::SplitInclusive<'a, u8, fn(&u8) -> bool>>;

fn check_line(line: &[u8]) -> Result<(), String> {
    if line.contains(&0) {
        return Err(format!("NUL in line: {}", shown(line)));
    }
    Ok(())
}

fn shown(line: &[u8]) -> String {
    let line = strip_eol(line);
    let s: String = String::from_utf8_lossy(&line[..line.len().min(80)]).escape_debug().collect();
    format!("\"{s}\"")
}

/// Mail headers up to the blank line: `From:` and `Subject:` are required, continuation lines fold.
fn read_headers(lines: &mut Lines<'_>, patch: &mut Patch) -> Result<(), String> {
    #[derive(PartialEq)]
    enum Open {
        Nothing,
        Author,
        Subject,
        Other,
    }
    let mut open = Open::Nothing;
    let (mut author, mut subject) = (false, false);
    loop {
        let Some(line) = lines.next() else { return Err("headers do not end".into()) };
        check_line(line)?;
        let text = strip_eol(line);
        if text.is_empty() {
            break;
        }
        if text[0] == b' ' || text[0] == b'\t' {
            let value = match open {
                Open::Nothing => return Err(format!("continuation without a header: {}", shown(line))),
                Open::Author => &mut patch.author,
                Open::Subject => &mut patch.subject,
                Open::Other => continue,
            };
            value.push(b' ');
            value.extend_from_slice(text.trim_ascii_start());
            continue;
        }
        let Some(colon) = text.iter().position(|b| *b == b':') else {
            return Err(format!("not a header: {}", shown(line)));
        };
        let (name, value) = (&text[..colon], text[colon + 1..].trim_ascii_start());
        if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
            return Err(format!("not a header: {}", shown(line)));
        }
        let (seen, target, which) = if name.eq_ignore_ascii_case(b"From") {
            (&mut author, &mut patch.author, Open::Author)
        } else if name.eq_ignore_ascii_case(b"Subject") {
            (&mut subject, &mut patch.subject, Open::Subject)
        } else {
            open = Open::Other;
            continue;
        };
        if std::mem::replace(seen, true) {
            return Err(format!("second {} header", String::from_utf8_lossy(name)));
        }
        target.extend_from_slice(value);
        open = which;
    }
    if !author {
        return Err("no From header".into());
    }
    if !subject {
        return Err("no Subject header".into());
    }
    Ok(())
}

/// The body up to the next message: free text until the first diff, then diff headers (paths checked),
/// hunks (skipped by their counts) and binary patches.
fn read_body(lines: &mut Lines<'_>, patch: &mut Patch) -> Result<(), String> {
    let mut in_diff = false;
    while let Some(&line) = lines.peek() {
        check_line(line)?;
        let text = strip_eol(line);
        if separator(text).is_some() {
            return Ok(());
        }
        if mailsplit_would_split(line) {
            return Err(format!("line git mailsplit would split at: {}", shown(line)));
        }
        lines.next();
        if let Some(names) = text.strip_prefix(b"diff --git ") {
            in_diff = true;
            for p in diff_git_paths(names)? {
                patch.paths.push(p);
            }
            continue;
        }
        if !in_diff {
            continue;
        }
        if let Some(name) = text.strip_prefix(b"--- ").or_else(|| text.strip_prefix(b"+++ ")) {
            // git reads an unquoted name here up to a tab (a timestamp may follow); so do we.
            let name = match name.iter().position(|b| *b == b'\t') {
                Some(tab) if name.first() != Some(&b'"') => &name[..tab],
                _ => name,
            };
            if name != b"/dev/null" {
                let name = unquote_if_quoted(name)?;
                let stripped = name.strip_prefix(b"a/").or_else(|| name.strip_prefix(b"b/"));
                let stripped = stripped.ok_or_else(|| format!("path without a/ or b/: {}", shown(line)))?;
                patch.paths.push(clean(stripped)?);
            }
        } else if let Some(name) =
            [&b"rename from "[..], b"rename to ", b"copy from ", b"copy to "].iter().find_map(|p| text.strip_prefix(*p))
        {
            patch.paths.push(clean(&unquote_if_quoted(name)?)?);
        } else if let Some(range) = text.strip_prefix(b"@@ -") {
            skip_hunk(lines, range).map_err(|e| format!("{e}: {}", shown(line)))?;
        }
        // Anything else (mode, index and similarity lines, binary patches, the signature) names no path.
    }
    Ok(())
}

/// Skips a hunk's lines, `@@ -a[,b] +c[,d] @@` having promised `b` old and `d` new ones.
fn skip_hunk(lines: &mut Lines<'_>, range: &[u8]) -> Result<(), String> {
    let end = range.windows(3).position(|w| w == b" @@").ok_or("unterminated hunk header")?;
    let (old, new) = {
        let mut parts = range[..end].split(|b| *b == b' ');
        let old = parts.next().ok_or("bad hunk header")?;
        let new = parts.next().and_then(|n| n.strip_prefix(b"+")).ok_or("bad hunk header")?;
        if parts.next().is_some() {
            return Err("bad hunk header".into());
        }
        (count(old)?, count(new)?)
    };
    let (mut old, mut new) = (old, new);
    while old > 0 || new > 0 {
        let Some(line) = lines.next() else { return Err("hunk ends early".into()) };
        check_line(line)?;
        match line.first() {
            Some(b' ') | Some(b'\n') if old > 0 && new > 0 => {
                old -= 1;
                new -= 1;
            }
            Some(b'-') if old > 0 => old -= 1,
            Some(b'+') if new > 0 => new -= 1,
            Some(b'\\') => {}
            _ => return Err("hunk does not match its line counts".into()),
        }
    }
    // "\ No newline at end of file" may follow the last line.
    if lines.peek().is_some_and(|l| l.starts_with(b"\\")) {
        lines.next();
    }
    Ok(())
}

/// The line count of `start[,count]` (1 when absent).
fn count(range: &[u8]) -> Result<u64, String> {
    let number = |s: &[u8]| -> Result<u64, String> {
        if s.is_empty() || s.len() > 12 || !s.iter().all(u8::is_ascii_digit) {
            return Err("bad hunk header".into());
        }
        Ok(std::str::from_utf8(s).unwrap().parse().unwrap())
    };
    match range.iter().position(|b| *b == b',') {
        Some(comma) => {
            number(&range[..comma])?;
            number(&range[comma + 1..])
        }
        None => number(range).map(|_| 1),
    }
}

/// The two names of `diff --git a/X b/Y`. Quoted names are unquoted; unquoted ones may hold spaces, so
/// the line is split where both halves are the same name (git's rule when nothing else names the file),
/// else every split is checked.
fn diff_git_paths(names: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let bad = || format!("invalid diff header: {}", shown(names));
    if names.first() == Some(&b'"') {
        let (a, rest) = quoted(names).ok_or_else(bad)?;
        let rest = rest.strip_prefix(b" ").ok_or_else(bad)?;
        let b = if rest.first() == Some(&b'"') {
            let (b, tail) = quoted(rest).ok_or_else(bad)?;
            if !tail.is_empty() {
                return Err(bad());
            }
            b
        } else {
            rest.to_vec()
        };
        return two(&a, &b).ok_or_else(bad)?;
    }
    if let Some(q) = names.windows(2).position(|w| w == b" \"") {
        let (b, tail) = quoted(&names[q + 1..]).ok_or_else(bad)?;
        if !tail.is_empty() {
            return Err(bad());
        }
        return two(&names[..q], &b).ok_or_else(bad)?;
    }
    let splits: Vec<usize> = names.windows(3).enumerate().filter(|(_, w)| *w == b" b/").map(|(i, _)| i).collect();
    if let Some(&i) = splits.iter().find(|&&i| names[..i].strip_prefix(b"a/") == Some(&names[i + 3..])) {
        return two(&names[..i], &names[i + 1..]).ok_or_else(bad)?;
    }
    // A rename (the names differ) with spaces: every reading must be clean.
    let mut out = Vec::new();
    for i in &splits {
        out.extend(two(&names[..*i], &names[i + 1..]).ok_or_else(bad)??);
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// `a/X` and `b/Y` as clean paths; `None` when the prefixes are missing.
fn two(a: &[u8], b: &[u8]) -> Option<Result<Vec<Vec<u8>>, String>> {
    let (a, b) = (a.strip_prefix(b"a/")?, b.strip_prefix(b"b/")?);
    Some(clean(a).and_then(|a| Ok(vec![a, clean(b)?])))
}

fn unquote_if_quoted(name: &[u8]) -> Result<Vec<u8>, String> {
    if name.first() != Some(&b'"') {
        return Ok(name.to_vec());
    }
    match quoted(name) {
        Some((v, [])) => Ok(v),
        _ => Err(format!("invalid quoted path: {}", shown(name))),
    }
}

/// A C-style quoted name as git writes one (`\"`, `\\`, `\a\b\f\n\r\t\v`, `\ooo`); the value and what
/// follows the closing quote.
fn quoted(s: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 1;
    loop {
        match *s.get(i)? {
            b'"' => return Some((out, &s[i + 1..])),
            b'\\' => {
                let c = *s.get(i + 1)?;
                i += 2;
                out.push(match c {
                    b'"' | b'\\' => c,
                    b'a' => 7,
                    b'b' => 8,
                    b'f' => 12,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'v' => 11,
                    b'0'..=b'3' => {
                        let digits = s.get(i..i + 2)?;
                        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                            return None;
                        }
                        i += 2;
                        (c - b'0') * 64 + (digits[0] - b'0') * 8 + (digits[1] - b'0')
                    }
                    _ => return None,
                });
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// A path inside the tree, as git's `verify_path` wants it: relative, no empty, `.` or `..` component, no
/// `.git` component in any case, no NUL or line break.
pub fn clean(path: &[u8]) -> Result<Vec<u8>, String> {
    let refused = || format!("invalid path: {}", shown(path));
    if path.is_empty() || path.iter().any(|b| matches!(b, 0 | b'\n' | b'\r')) {
        return Err(refused());
    }
    for c in path.split(|b| *b == b'/') {
        if c.is_empty() || c == b"." || c == b".." || c.eq_ignore_ascii_case(b".git") {
            return Err(refused());
        }
    }
    Ok(path.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

    fn message(diff: &str) -> String {
        format!(
            "From {OID} Mon Sep 17 00:00:00 2001\nFrom: A U Thor <a@example.com>\nDate: Thu, 1 Jan 2026 00:00:00 +0000\n\
             Subject: [PATCH] a change\n that folds\n\nThe body.\n---\n a | 1 +\n\n{diff}-- \n2.47.3\n\n"
        )
    }

    const DIFF: &str = "diff --git a/dir/a b/dir/a\nindex e69de29..d00491f 100644\n--- a/dir/a\n+++ b/dir/a\n\
                        @@ -1,2 +1,2 @@\n--- not a header\n-old\n+++ not a header either\n+new\n";

    #[test]
    fn format_patch_output_reads() {
        let series = format!(
            "{}{}",
            message(DIFF),
            message("diff --git a/x b/y\nsimilarity index 100%\nrename from x\nrename to y\n")
        );
        let patches = parse(series.as_bytes()).unwrap();
        assert_eq!(patches.len(), 2);
        assert_eq!(patches[0].commit, OID);
        assert_eq!(patches[0].author, b"A U Thor <a@example.com>");
        assert_eq!(patches[0].subject, b"[PATCH] a change that folds");
        assert_eq!(patches[0].paths, [&b"dir/a"[..], b"dir/a", b"dir/a", b"dir/a"]);
        assert_eq!(patches[1].paths, [&b"x"[..], b"y", b"x", b"y"]);
    }

    #[test]
    fn quoted_and_spaced_names() {
        let diff =
            "diff --git \"a/caf\\303\\251\" \"b/caf\\303\\251\"\n--- \"a/caf\\303\\251\"\n+++ \"b/caf\\303\\251\"\n";
        assert_eq!(parse(message(diff).as_bytes()).unwrap()[0].paths[0], "café".as_bytes());
        let spaced = "diff --git a/a b/c b/a b/c\nold mode 100644\nnew mode 100755\n";
        assert_eq!(parse(message(spaced).as_bytes()).unwrap()[0].paths, [&b"a b/c"[..], b"a b/c"]);
    }

    #[test]
    fn hostile_series_are_refused() {
        let refused = |diff: &str| parse(message(diff).as_bytes()).unwrap_err();
        for diff in [
            "diff --git a/../x b/../x\n",
            "diff --git a/x b/x\n--- a/x\n+++ b/.git/config\n",
            "diff --git a/x b/x\n--- a/x\n+++ b/.GIT/hooks/pre-commit\n",
            "diff --git \"a/x\\nnew\" \"b/x\\nnew\"\n",
            "diff --git \"a/x\\000y\" \"b/x\\000y\"\n",
            "diff --git a/x b/y\nrename from x\nrename to ../../y\n",
            "diff --git a//etc/passwd b//etc/passwd\n",
            "diff --git a/x b/x\n--- a/x\n+++ /etc/passwd\n",
            "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n",
            "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n+c\n--- a/x\n+++ b/../y\n",
            "diff --git a/x b/x\n--- a/x\0\n",
            "diff --git a/x b/x\n--- a/x\n+++ b/x/..\tanything\n",
        ] {
            assert!(matches!(refused(diff), PatchError::Malformed { index: 1, .. }), "{diff:?}");
        }
        assert_eq!(parse(b"gitdir: /elsewhere\n"), Err(PatchError::NotAPatch));
        assert_eq!(parse(b""), Err(PatchError::NotAPatch));
        let no_subject = format!("From {OID} Mon Sep 17 00:00:00 2001\nFrom: a\n\n{DIFF}");
        assert!(parse(no_subject.as_bytes()).is_err());
        // A body line git mailsplit would start a new message at.
        let split = message("diff --git a/x b/x\n").replace("The body.", "From x Sat Jan  3 01:05:34 1996");
        assert!(parse(split.as_bytes()).is_err());
    }

    /// Where `git mailsplit` starts a message (git 2.47, given these lines in a body, split at the first only).
    #[test]
    fn split_where_mailsplit_splits() {
        assert!(mailsplit_would_split(b"From x Sat Jan  3 01:05:34 1996\n"));
        assert!(!mailsplit_would_split(b"From the docs: 12:34 a\n"));
        assert!(!mailsplit_would_split(b"From y 01:02:03 85\n"));
        assert!(mailsplit_would_split(format!("From {OID}{}\n", std::str::from_utf8(MAGIC_DATE).unwrap()).as_bytes()));
    }
}
