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

pub struct Parser<'a> {
    raw: std::collections::VecDeque<Vec<u8>>,
    patches: &'a [u8],
    pos: usize,
    pending: Option<Vec<u8>>,
    limits: Limits,
    files: i64,
    lines: i64,
    bytes: i64,
    finished: bool,
}

impl<'a> Parser<'a> {
    pub fn new(output: &'a [u8], limits: Limits) -> Parser<'a> {
        let mut raw = std::collections::VecDeque::new();
        let mut pos = 0;
        while pos < output.len() && output[pos] == b':' {
            let end = output[pos..].iter().position(|b| *b == b'\n').map(|e| pos + e).unwrap_or(output.len());
            raw.push_back(output[pos..end].to_vec());
            pos = (end + 1).min(output.len());
        }
        // The line after the raw lines (blank) is dropped.
        if pos < output.len() {
            let end = output[pos..].iter().position(|b| *b == b'\n').map(|e| pos + e + 1).unwrap_or(output.len());
            pos = end;
        }
        Parser { raw, patches: output, pos, pending: None, limits, files: 0, lines: 0, bytes: 0, finished: false }
    }

    fn next_line(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.patches.len() {
            return None;
        }
        let start = self.pos;
        let end =
            self.patches[start..].iter().position(|b| *b == b'\n').map(|e| start + e + 1).unwrap_or(self.patches.len());
        self.pos = end;
        Some(&self.patches[start..end])
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
            match self.next_line() {
                Some(header) => {
                    let header = header.strip_suffix(b"\n").unwrap_or(header);
                    match header_from_path(header) {
                        Some(p) => self.pending = Some(p),
                        None => return Some(Err("diff header regexp mismatch".into())),
                    }
                }
                None => return Some(Ok(diff)),
            }
        }
        if self.pending.as_deref() != Some(diff.from_path.as_slice()) {
            return Some(Ok(diff));
        }
        self.pending = None;
        loop {
            let remaining = &self.patches[self.pos.min(self.patches.len())..];
            if remaining.is_empty() || remaining.starts_with(b"diff --git") {
                break;
            }
            if remaining.len() < 10 {
                // Upstream peeks 10 bytes for the next header: a shorter tail is taken whole, as one line.
                self.count(&mut diff, remaining);
                self.pos = self.patches.len();
                break;
            }
            let line = self.next_line().expect("not at the end");
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
