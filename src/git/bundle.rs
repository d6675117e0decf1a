//! The header of a git bundle, read before git sees the file.
//!
//! A client's "bundle" is handed to `git bundle unbundle`; a file that is not one could make git read
//! something else (a `gitdir:` file is a repository to `git clone`), and a header git reads differently from
//! us (a NUL cuts a ref name short for git's string functions) would make us set refs git never checked. So
//! the bytes must be a v2 or v3 bundle header in exactly the shape `git bundle create` writes and git's
//! `read_bundle_header` reads, followed by a pack; anything else is refused here.

/// A parsed bundle header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u8,
    /// `sha1` or `sha256` (v3's `@object-format`; always `sha1` in v2).
    pub object_format: &'static str,
    /// v3's `@filter=<spec>`, when the bundle is of a partial clone.
    pub filter: Option<Vec<u8>>,
    /// v3's capability lines as written (without the `@`), in order.
    pub capabilities: Vec<Vec<u8>>,
    /// Commits the receiving repository must already have: `(oid, comment)`, the comment (the commit's
    /// subject) `None` when the line has no space after the id.
    pub prerequisites: Vec<(String, Option<Vec<u8>>)>,
    /// `(oid, ref name)` in the order of the file.
    pub refs: Vec<(String, Vec<u8>)>,
    /// Bytes of the header, the blank line that ends it included: the pack starts here.
    pub len: usize,
}

/// Why bytes are not a bundle header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("not a v2 or v3 git bundle")]
    NotABundle,
    /// More bytes are needed to tell (the buffer ends inside the header or before the pack's signature).
    #[error("bundle header is incomplete")]
    Incomplete,
    #[error("invalid bundle header: {0}")]
    Malformed(String),
}

/// The signature lines, one per version.
const SIGNATURES: [(&[u8], u8); 2] = [(b"# v2 git bundle\n", 2), (b"# v3 git bundle\n", 3)];

/// Length of a signature line.
pub const SIGNATURE_LEN: usize = 16;

/// Reads the header at the start of `buf`. `Incomplete` when `buf` could still become a bundle with more
/// bytes; `NotABundle` as soon as the signature cannot match.
pub fn parse(buf: &[u8]) -> Result<Header, HeaderError> {
    let n = buf.len().min(SIGNATURE_LEN);
    let version = match SIGNATURES.iter().find(|(sig, _)| sig[..n] == buf[..n]) {
        None => return Err(HeaderError::NotABundle),
        Some(_) if n < SIGNATURE_LEN => return Err(HeaderError::Incomplete),
        Some((_, v)) => *v,
    };
    let malformed = |what: &str, line: &[u8]| {
        let shown: String = String::from_utf8_lossy(&line[..line.len().min(80)]).escape_debug().collect();
        HeaderError::Malformed(format!("{what}: \"{shown}\""))
    };
    let mut header = Header {
        version,
        object_format: "sha1",
        filter: None,
        capabilities: Vec::new(),
        prerequisites: Vec::new(),
        refs: Vec::new(),
        len: 0,
    };
    // One line per ref at most: room for all of them at once, not twice that after the last doubling.
    let end = buf.windows(2).position(|w| w == b"\n\n").map_or(buf.len(), |p| p + 1);
    header.refs.reserve_exact(buf[SIGNATURE_LEN.min(end)..end].iter().filter(|b| **b == b'\n').count());
    let mut pos = SIGNATURE_LEN;
    let mut in_capabilities = version == 3;
    loop {
        let Some(eol) = buf[pos..].iter().position(|b| *b == b'\n') else { return Err(HeaderError::Incomplete) };
        let line = &buf[pos..pos + eol];
        pos += eol + 1;
        if line.is_empty() {
            break;
        }
        if line.contains(&0) {
            return Err(malformed("NUL in line", line));
        }
        // Capabilities come first, as `git bundle create` writes them.
        if in_capabilities {
            if let Some(cap) = line.strip_prefix(b"@") {
                match cap {
                    b"object-format=sha1" => header.object_format = "sha1",
                    b"object-format=sha256" => header.object_format = "sha256",
                    _ => match cap.strip_prefix(b"filter=") {
                        Some(spec) if !spec.is_empty() && header.filter.is_none() => {
                            header.filter = Some(spec.to_vec())
                        }
                        _ => return Err(malformed("unknown capability", line)),
                    },
                }
                header.capabilities.push(cap.to_vec());
                continue;
            }
            in_capabilities = false;
        }
        let hex_len = if header.object_format == "sha256" { 64 } else { 40 };
        let (prerequisite, rest) = match line.strip_prefix(b"-") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let oid = rest.get(..hex_len).filter(|h| h.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        let Some(oid) = oid else { return Err(malformed("unrecognized header", line)) };
        let oid = String::from_utf8(oid.to_vec()).expect("hex digits");
        let after = &rest[hex_len..];
        if prerequisite {
            // `git bundle create` writes prerequisites before refs; git would read them in any order, we
            // take only its own.
            if !header.refs.is_empty() {
                return Err(malformed("prerequisite after refs", line));
            }
            // `-<oid>` alone or followed by a space and the commit's subject.
            let comment = match after {
                [] => None,
                [b' ', comment @ ..] => Some(comment.to_vec()),
                _ => return Err(malformed("unrecognized header", line)),
            };
            header.prerequisites.push((oid, comment));
        } else {
            match after {
                [b' ', name @ ..] if !name.is_empty() && !name.iter().any(|b| b.is_ascii_whitespace()) => {
                    header.refs.push((oid, name.to_vec()))
                }
                _ => return Err(malformed("unrecognized header", line)),
            }
        }
    }
    match buf.get(pos..pos + 4) {
        Some(b"PACK") => {}
        Some(_) => return Err(HeaderError::Malformed("no pack after the header".into())),
        None if b"PACK".starts_with(&buf[pos..]) => return Err(HeaderError::Incomplete),
        None => return Err(HeaderError::Malformed("no pack after the header".into())),
    }
    header.len = pos;
    Ok(header)
}

impl Header {
    /// The header as `git bundle create` writes it: `parse(h.to_bytes() + pack)` gives `h` back.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = SIGNATURES.iter().find(|(_, v)| *v == self.version).expect("version").0.to_vec();
        for cap in &self.capabilities {
            out.push(b'@');
            out.extend_from_slice(cap);
            out.push(b'\n');
        }
        for (oid, comment) in &self.prerequisites {
            out.push(b'-');
            out.extend_from_slice(oid.as_bytes());
            if let Some(comment) = comment {
                out.push(b' ');
                out.extend_from_slice(comment);
            }
            out.push(b'\n');
        }
        for (oid, name) in &self.refs {
            out.extend_from_slice(oid.as_bytes());
            out.push(b' ');
            out.extend_from_slice(name);
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(c: char) -> String {
        c.to_string().repeat(40)
    }

    #[test]
    fn reads_what_git_writes() {
        let text = format!(
            "# v2 git bundle\n-{} subject line\n{} refs/heads/main\n{} HEAD\n\nPACK\0\0\0\x02",
            oid('a'),
            oid('b'),
            oid('b')
        );
        let h = parse(text.as_bytes()).unwrap();
        assert_eq!((h.version, h.object_format), (2, "sha1"));
        assert_eq!(h.prerequisites, vec![(oid('a'), Some(b"subject line".to_vec()))]);
        assert_eq!(h.refs, vec![(oid('b'), b"refs/heads/main".to_vec()), (oid('b'), b"HEAD".to_vec())]);
        assert_eq!(&text.as_bytes()[h.len..h.len + 4], b"PACK");
        assert_eq!(h.to_bytes(), text.as_bytes()[..h.len]);

        let v3 = format!("# v3 git bundle\n@object-format=sha1\n@filter=blob:none\n{} refs/tags/v1\n\nPACK", oid('c'));
        let h = parse(v3.as_bytes()).unwrap();
        assert_eq!((h.version, h.filter.as_deref()), (3, Some(&b"blob:none"[..])));
        assert_eq!(h.to_bytes(), v3.as_bytes()[..h.len]);

        // Found by the fuzzer: a prerequisite with a space and no subject is written back with its space.
        let spaced = format!("# v2 git bundle\n-{} \n-{}\n\nPACK", oid('a'), oid('b'));
        let h = parse(spaced.as_bytes()).unwrap();
        assert_eq!(h.prerequisites, vec![(oid('a'), Some(Vec::new())), (oid('b'), None)]);
        assert_eq!(h.to_bytes(), spaced.as_bytes()[..h.len]);

        // Found by the fuzzer: a v3 header without `@object-format` (git takes sha1) is written back
        // without one.
        let bare = format!("# v3 git bundle\n{} HEAD\n\nPACK", oid('d'));
        let h = parse(bare.as_bytes()).unwrap();
        assert_eq!((h.object_format, h.to_bytes()), ("sha1", bare.as_bytes()[..h.len].to_vec()));
    }

    #[test]
    fn incomplete_until_the_pack_signature() {
        let text = format!("# v2 git bundle\n{} refs/heads/main\n\nPACK", oid('b'));
        for end in 0..text.len() {
            assert_eq!(parse(&text.as_bytes()[..end]), Err(HeaderError::Incomplete), "{end}");
        }
        assert!(parse(text.as_bytes()).is_ok());
    }

    #[test]
    fn refuses_what_git_would_read_differently_or_not_at_all() {
        let b = oid('b');
        for (bad, want) in [
            ("gitdir: /any/repo.git\n".to_string(), HeaderError::NotABundle),
            ("# v4 git bundle\n".to_string(), HeaderError::NotABundle),
            ("PACK\0\0\0\x02".to_string(), HeaderError::NotABundle),
            ("# v2 git bundle\ngitdir: ../p.git\n\nPACK".to_string(), HeaderError::Malformed(String::new())),
            (format!("# v2 git bundle\n{b} refs/heads/a\0b\n\nPACK"), HeaderError::Malformed(String::new())),
            (format!("# v2 git bundle\n{b}\n\nPACK"), HeaderError::Malformed(String::new())),
            (format!("# v2 git bundle\n{b} refs/heads/a b\n\nPACK"), HeaderError::Malformed(String::new())),
            (format!("# v2 git bundle\n{}\n\nPACK", b.to_uppercase()), HeaderError::Malformed(String::new())),
            (format!("# v2 git bundle\n@object-format=sha1\n{b} HEAD\n\nPACK"), HeaderError::Malformed(String::new())),
            (format!("# v3 git bundle\n@object-format=md5\n{b} HEAD\n\nPACK"), HeaderError::Malformed(String::new())),
            (format!("# v3 git bundle\n{b} HEAD\n@filter=x\n\nPACK"), HeaderError::Malformed(String::new())),
            (format!("# v2 git bundle\n{b} HEAD\n\nPAXK"), HeaderError::Malformed(String::new())),
            // Found by the fuzzer: refs and prerequisites interleaved, which git never writes.
            (format!("# v2 git bundle\n{b} HEAD\n-{b}\n\nPACK"), HeaderError::Malformed(String::new())),
            (format!("# v2 git bundle\n{b} HEAD\r\n\nPACK"), HeaderError::Malformed(String::new())),
        ] {
            let got = parse(bad.as_bytes());
            match (&got, &want) {
                (Err(HeaderError::Malformed(_)), HeaderError::Malformed(_)) => {}
                _ => assert_eq!(got, Err(want), "{bad:?}"),
            }
        }
    }
}
