//! Upstream's parser for `git diff --raw --patch` output, with its limits and its quirks kept (they decide
//! what GitLab shows): raw lines first, then patches matched to them by path; `@@` lines are not counted;
//! a type change becomes a deletion plus an addition; a diff over the limits becomes an overflow marker.

/// What the parser is asked to enforce (already capped at upstream's hard limits).
#[derive(Debug, Default, Clone, Copy)]
pub struct Limits {
    pub enforce: bool,
    pub max_files: i64,
    pub max_lines: i64,
    pub max_bytes: i64,
    pub max_patch_bytes: i64,
    pub collapse: bool,
    pub safe_max_files: i64,
    pub safe_max_lines: i64,
    pub safe_max_bytes: i64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub from_path: Vec<u8>,
    pub to_path: Vec<u8>,
    pub from_id: String,
    pub to_id: String,
    pub old_mode: i32,
    pub new_mode: i32,
    pub binary: bool,
    pub patch: Vec<u8>,
    pub overflow_marker: bool,
    pub collapsed: bool,
    pub too_large: bool,
    line_count: i64,
}

const ZERO_OID: &str = "0000000000000000000000000000000000000000";

/// One `:<old mode> <new mode> <old oid> <new oid> <status>\t<path>[\t<path>]` line.
fn parse_raw(line: &[u8]) -> Result<(Diff, u8), String> {
    let bad = || "raw line regexp mismatch".to_string();
    let line = line.strip_prefix(b":").ok_or_else(bad)?;
    let tab = line.iter().position(|b| *b == b'\t').ok_or_else(bad)?;
    let meta = std::str::from_utf8(&line[..tab]).map_err(|_| bad())?;
    let f: Vec<&str> = meta.split(' ').collect();
    let [old_mode, new_mode, from, to, status] = f.as_slice() else { return Err(bad()) };
    let hex40 = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let kind = status.bytes().next().ok_or_else(bad)?;
    if !digits(old_mode) || !digits(new_mode) || !hex40(from) || !hex40(to) || !b"ADTUXMRC".contains(&kind) {
        return Err(bad());
    }
    if !status[1..].bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let paths = &line[tab + 1..];
    let (p1, p2) = match paths.iter().position(|b| *b == b'\t') {
        Some(i) => (&paths[..i], Some(&paths[i + 1..])),
        None => (paths, None),
    };
    let from_path = unescape(unquote(p1));
    let to_path = match (kind, p2) {
        (b'R' | b'C', Some(p2)) => unescape(unquote(p2)),
        _ => from_path.clone(),
    };
    let diff = Diff {
        old_mode: i32::from_str_radix(old_mode, 8).map_err(|_| bad())?,
        new_mode: i32::from_str_radix(new_mode, 8).map_err(|_| bad())?,
        from_id: from.to_string(),
        to_id: to.to_string(),
        from_path,
        to_path,
        ..Default::default()
    };
    Ok((diff, kind))
}

fn unquote(p: &[u8]) -> &[u8] {
    if p.len() >= 2 && p[0] == b'"' && p[p.len() - 1] == b'"' {
        &p[1..p.len() - 1]
    } else {
        p
    }
}

/// Git's C-style escapes: `\NNN` octal bytes and the usual letters; anything else keeps its backslash.
pub fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' || i + 1 >= s.len() {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let c = s[i + 1];
        if c.is_ascii_digit() && i + 3 < s.len() && s[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (s[i + 1] - b'0') as u32 * 64 + (s[i + 2] - b'0') as u32 * 8 + (s[i + 3] - b'0') as u32;
            out.push(n as u8);
            i += 4;
            continue;
        }
        let mapped = match c {
            b'"' | b'\\' | b'/' | b'\'' => Some(c),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        match mapped {
            Some(m) => out.push(m),
            None => out.extend_from_slice(&[b'\\', c]),
        }
        i += 2;
    }
    out
}

/// `diff --git a/<path> b/<path>`: the from path, unescaped.
fn header_from_path(line: &[u8]) -> Option<Vec<u8>> {
    let rest = line.strip_prefix(b"diff --git ")?;
    let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
    let rest = rest.strip_prefix(b"a/")?;
    // The shortest match up to ` b/` or `" "b/`, as upstream's lazy regexp takes it.
    let mut i = 0;
    while i < rest.len() {
        let tail = &rest[i..];
        if tail.starts_with(b" b/")
            || tail.starts_with(b" \"b/")
            || tail.starts_with(b"\" \"b/")
            || tail.starts_with(b"\" b/")
        {
            return Some(unescape(&rest[..i]));
        }
        i += 1;
    }
    None
}

/// git's output, read as the parser needs it: whole lines, and a peek of up to 10 bytes.
struct Source<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
}

impl<R: std::io::Read> Source<R> {
    /// Makes at least `n` unread bytes available, unless the output ends first.
    fn fill(&mut self, n: usize) -> Result<(), String> {
        while !self.eof && self.buf.len() - self.start < n {
            if self.start > 0 && self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.reader.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read diff: {e}")),
            }
        }
        Ok(())
    }

    fn peek(&mut self, n: usize) -> Result<&[u8], String> {
        self.fill(n)?;
        let end = (self.start + n).min(self.buf.len());
        Ok(&self.buf[self.start..end])
    }

    /// The next line with its newline (the last may lack one); `None` at the end.
    fn line(&mut self) -> Result<Option<Vec<u8>>, String> {
        // Unread bytes already searched: each byte is looked at once, however long the line.
        let mut searched = 0;
        loop {
            if let Some(i) = self.buf[self.start + searched..].iter().position(|b| *b == b'\n') {
                let end = self.start + searched + i + 1;
                let line = self.buf[self.start..end].to_vec();
                self.start = end;
                return Ok(Some(line));
            }
            searched = self.buf.len() - self.start;
            if self.eof {
                if self.start == self.buf.len() {
                    return Ok(None);
                }
                let line = self.buf[self.start..].to_vec();
                self.start = self.buf.len();
                return Ok(Some(line));
            }
            // Keep what is unread, then read more.
            self.buf.drain(..self.start);
            self.start = 0;
            let want = self.buf.len() + 1;
            self.fill(want)?;
        }
    }

    /// Everything left (fewer than 10 bytes, when called).
    fn rest(&mut self) -> Vec<u8> {
        let rest = self.buf[self.start..].to_vec();
        self.start = self.buf.len();
        rest
    }
}

pub struct Parser<R> {
    raw: std::collections::VecDeque<Vec<u8>>,
    source: Source<R>,
    pending: Option<Vec<u8>>,
    limits: Limits,
    files: i64,
    lines: i64,
    bytes: i64,
    finished: bool,
}

impl<R: std::io::Read> Parser<R> {
    /// Reads the raw lines (all of them come first) and stands at the first patch.
    pub fn new(output: R, limits: Limits) -> Result<Parser<R>, String> {
        let mut source = Source { reader: output, buf: Vec::new(), start: 0, eof: false };
        let mut raw = std::collections::VecDeque::new();
        while source.peek(1)? == b":" {
            let mut line = source.line()?.unwrap_or_default();
            if line.ends_with(b"\n") {
                line.pop();
            }
            raw.push_back(line);
        }
        // The line after the raw lines (blank) is dropped.
        source.line()?;
        Ok(Parser { raw, source, pending: None, limits, files: 0, lines: 0, bytes: 0, finished: false })
    }

    /// Whether the parser stopped at an overflow marker: git's further output is not needed.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The next diff, `Err` on output upstream could not parse.
    pub fn next_diff(&mut self) -> Option<Result<Diff, String>> {
        if self.finished {
            return None;
        }
        let line = self.raw.pop_front()?;
        let (mut diff, status) = match parse_raw(&line) {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        if status == b'T' {
            // A type change: this one becomes the deletion, the addition follows as its own raw line.
            let mut synthetic = format!(":0 {:o} {ZERO_OID} {} A\t", diff.new_mode, diff.to_id).into_bytes();
            let paths = &line[line.iter().position(|b| *b == b'\t').expect("parsed") + 1..];
            synthetic.extend_from_slice(paths.split(|b| *b == b'\t').next().unwrap_or_default());
            self.raw.push_front(synthetic);
            diff.new_mode = 0;
            diff.to_id = ZERO_OID.to_string();
        }
        self.files += 1;
        if self.pending.is_none() {
            match self.source.line() {
                Ok(Some(header)) => {
                    let header = header.strip_suffix(b"\n").unwrap_or(&header);
                    match header_from_path(header) {
                        Some(p) => self.pending = Some(p),
                        None => return Some(Err("diff header regexp mismatch".into())),
                    }
                }
                Ok(None) => return Some(Ok(diff)),
                Err(e) => return Some(Err(e)),
            }
        }
        if self.pending.as_deref() != Some(diff.from_path.as_slice()) {
            return Some(Ok(diff));
        }
        self.pending = None;
        loop {
            let ahead = match self.source.peek(10) {
                Ok(a) => a,
                Err(e) => return Some(Err(e)),
            };
            if ahead.is_empty() || ahead.starts_with(b"diff --git") {
                break;
            }
            if ahead.len() < 10 {
                // Upstream peeks 10 bytes for the next header: a shorter tail is taken whole, as one line.
                let rest = self.source.rest();
                self.count(&mut diff, &rest);
                break;
            }
            let line = match self.source.line() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => return Some(Err(e)),
            };
            let line = line.as_slice();
            if line.starts_with(b"@@") {
                diff.patch.extend_from_slice(line);
            } else if diff.patch.is_empty() && (line.starts_with(b"---") || line.starts_with(b"+++")) {
            } else if line == b"~\n" || [b'-', b'+', b' ', b'\\'].contains(&line[0]) || line.starts_with(b"Binary") {
                if line.starts_with(b"Binary") {
                    diff.binary = true;
                }
                self.count(&mut diff, line);
            }
        }
        let l = self.limits;
        if l.collapse
            && (self.files > l.safe_max_files || self.lines > l.safe_max_lines || self.bytes > l.safe_max_bytes)
            && diff.line_count > 0
        {
            self.lines -= diff.line_count;
            self.bytes -= diff.patch.len() as i64;
            diff.patch.clear();
            diff.collapsed = true;
        }
        if l.enforce {
            if diff.patch.len() as i64 >= l.max_patch_bytes {
                self.lines -= diff.line_count;
                self.bytes -= diff.patch.len() as i64;
                diff.patch.clear();
                diff.too_large = true;
            }
            if self.files > l.max_files || self.bytes >= l.max_bytes || self.lines >= l.max_lines {
                self.finished = true;
                return Some(Ok(Diff { overflow_marker: true, ..Default::default() }));
            }
        }
        Some(Ok(diff))
    }

    fn count(&mut self, diff: &mut Diff, line: &[u8]) {
        diff.patch.extend_from_slice(line);
        diff.line_count += 1;
        self.lines += 1;
        self.bytes += line.len() as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte at a time, to cross every buffer boundary.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else { return Ok(0) };
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    fn all(mut p: Parser<impl std::io::Read>) -> Vec<Diff> {
        std::iter::from_fn(|| p.next_diff()).map(|d| d.unwrap()).collect()
    }

    #[test]
    fn parses_the_same_however_the_output_arrives() {
        let z = "0".repeat(40);
        let (a, b) = ("1".repeat(40), "2".repeat(40));
        let out = format!(
            ":100644 100644 {a} {b} M\tf.txt\n:000000 100644 {z} {b} A\t\"caf\\303\\251\"\n\n\
             diff --git a/f.txt b/f.txt\nindex 1..2 100644\n--- a/f.txt\n+++ b/f.txt\n@@ -1 +1 @@\n-old\n+new\n\
             diff --git \"a/caf\\303\\251\" \"b/caf\\303\\251\"\nnew file mode 100644\n--- /dev/null\n+++ \"b/caf\\303\\251\"\n@@ -0,0 +1 @@\n+x\n"
        );
        let whole = all(Parser::new(out.as_bytes(), Limits::default()).unwrap());
        let trickled = all(Parser::new(Trickle(out.as_bytes()), Limits::default()).unwrap());
        assert_eq!(whole, trickled);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].patch, b"@@ -1 +1 @@\n-old\n+new\n");
        assert_eq!(
            (whole[1].to_path.as_slice(), whole[1].patch.as_slice()),
            (&b"caf\xc3\xa9"[..], &b"@@ -0,0 +1 @@\n+x\n"[..])
        );
    }

    /// A reader that hands out at most 4 KiB at a time.
    struct Pieces<'a>(&'a [u8]);

    impl std::io::Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(4096);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// One 16 MiB line arriving in 4 KiB reads is read once: a parser that searched the line again after
    /// every read would look at ~32 GiB here and not finish in any reasonable time.
    #[test]
    fn a_long_line_is_read_once() {
        let (a, b) = ("1".repeat(40), "2".repeat(40));
        let long = "x".repeat(16 << 20);
        let out = format!(
            ":100644 100644 {a} {b} M\tf.txt\n\ndiff --git a/f.txt b/f.txt\nindex 1..2 100644\n--- a/f.txt\n+++ b/f.txt\n@@ -1 +1 @@\n-old\n+{long}\n"
        );
        let diffs = all(Parser::new(Pieces(out.as_bytes()), Limits::default()).unwrap());
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].patch.len(), "@@ -1 +1 @@\n-old\n+".len() + long.len() + 1);
        assert!(diffs[0].patch.ends_with(b"xxx\n"));
    }

    #[test]
    fn unescapes_like_git_quotes() {
        assert_eq!(unescape(br#"caf\303\251 \"q\" a\\b \x"#), b"caf\xc3\xa9 \"q\" a\\b \\x".to_vec());
        assert_eq!(header_from_path(b"diff --git a/x y b/x y"), Some(b"x y".to_vec()));
        assert_eq!(
            header_from_path(b"diff --git \"a/caf\\303\\251\" \"b/caf\\303\\251\""),
            Some(b"caf\xc3\xa9".to_vec())
        );
    }
}
