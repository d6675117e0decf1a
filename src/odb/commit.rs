//! Commits and tags as upstream shapes them (`GitCommit`, `Tag`), parsed from the raw object bytes the way
//! upstream's catfile parser does, so odd objects (missing emails, bad dates, non-UTF-8 names) come out
//! the same.

use prost_types::Timestamp;

use crate::proto::gitaly::{CommitAuthor, GitCommit, SignatureType};

/// Commit bodies and tag messages are cut to this size; `body_size` keeps the full length.
pub const MAX_MESSAGE_SIZE: usize = 10 * 1024;

/// Dates that do not parse, are negative, or are later than 2^53 are reported as Go's largest time.
const FALLBACK_SECONDS: i64 = i64::MAX - 62_135_596_800;
const MAX_UNIX_DATE: i64 = 1 << 53;

/// Splits a raw commit or tag at the first blank line: header lines, then the message.
pub fn split_raw(raw: &[u8]) -> (&[u8], &[u8]) {
    match find(raw, b"\n\n") {
        Some(i) => (&raw[..i], &raw[i + 2..]),
        None => (raw, &[]),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first line of a message, without trailing CR/LF.
pub fn subject(body: &[u8]) -> Vec<u8> {
    let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut end = first.len();
    while end > 0 && matches!(first[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    first[..end].to_vec()
}

/// A `GitCommit` from the raw bytes of commit `id`.
pub fn parse_commit(id: &str, raw: &[u8]) -> GitCommit {
    let (header, body) = split_raw(raw);
    let mut commit = GitCommit {
        id: id.to_string(),
        subject: subject(body),
        body_size: body.len() as i64,
        body: body[..body.len().min(MAX_MESSAGE_SIZE)].to_vec(),
        ..Default::default()
    };
    for line in header.split(|b| *b == b'\n') {
        if line.is_empty() || line[0] == b' ' {
            continue;
        }
        let Some(sp) = line.iter().position(|b| *b == b' ') else { continue };
        let (key, value) = (&line[..sp], &line[sp + 1..]);
        match key {
            b"parent" => commit.parent_ids.push(String::from_utf8_lossy(value).into_owned()),
            b"author" => commit.author = Some(parse_author(value)),
            b"committer" => commit.committer = Some(parse_author(value)),
            b"gpgsig" => commit.signature_type = signature_type(value) as i32,
            b"tree" => commit.tree_id = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
    }
    commit
}

/// `Name <email> 1234567890 +0100`, tolerant of every missing piece as upstream is.
pub fn parse_author(line: &[u8]) -> CommitAuthor {
    let mut author = CommitAuthor::default();
    let (name, rest) = match line.iter().position(|b| *b == b'<') {
        Some(i) => (&line[..i], Some(&line[i + 1..])),
        None => (line, None),
    };
    author.name = name.strip_suffix(b" ").unwrap_or(name).to_vec();
    let Some(rest) = rest else { return author };
    let Some(gt) = rest.iter().position(|b| *b == b'>') else { return author };
    author.email = rest[..gt].to_vec();
    let mut fields = rest[gt + 1..].split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
    let Some(seconds) = fields.next() else { return author };
    let seconds = std::str::from_utf8(seconds)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|s| (0..=MAX_UNIX_DATE).contains(s))
        .unwrap_or(FALLBACK_SECONDS);
    author.date = Some(Timestamp { seconds, nanos: 0 });
    let zone = fields.next();
    if let (Some(zone), None) = (zone, fields.next()) {
        author.timezone = zone.to_vec();
    }
    author
}

/// The kind of signature a `gpgsig` header's first line announces.
pub fn signature_type(first_line: &[u8]) -> SignatureType {
    match first_line.strip_suffix(b"\n").unwrap_or(first_line) {
        b"-----BEGIN SIGNED MESSAGE-----" => SignatureType::X509,
        b"-----BEGIN PGP MESSAGE-----" | b"-----BEGIN PGP SIGNATURE-----" => SignatureType::Pgp,
        _ => SignatureType::None,
    }
}

/// A tag object's fields as upstream reads them, before the target commit is looked up.
#[derive(Debug, Default)]
pub struct RawTag {
    pub object: String,
    pub kind: Vec<u8>,
    pub tag: crate::proto::gitaly::Tag,
}

/// Upstream's tag parser: `trim_len` cuts the message at 10 KiB, `trim_newline` drops trailing newlines.
pub fn parse_tag(id: &str, name: &[u8], raw: &[u8], trim_len: bool, trim_newline: bool) -> RawTag {
    let (header, mut body) = split_raw(raw);
    if trim_newline {
        while let Some(rest) = body.strip_suffix(b"\n") {
            body = rest;
        }
    }
    let mut out = RawTag::default();
    out.tag.id = id.to_string();
    out.tag.name = name.to_vec();
    out.tag.message_size = body.len() as i64;
    out.tag.message = if trim_len { body[..body.len().min(MAX_MESSAGE_SIZE)].to_vec() } else { body.to_vec() };
    for line in header.split(|b| *b == b'\n') {
        let Some(sp) = line.iter().position(|b| *b == b' ') else { continue };
        let (key, value) = (&line[..sp], &line[sp + 1..]);
        match key {
            b"object" => out.object = String::from_utf8_lossy(value).into_owned(),
            b"type" => out.kind = value.to_vec(),
            b"tagger" => out.tag.tagger = Some(parse_author(value)),
            _ => {}
        }
    }
    if out.tag.tagger.is_none() {
        out.tag.tagger = Some(CommitAuthor::default());
    }
    // A signature is recognised only after some message text, as upstream does.
    if let Some(at) = body.windows(10).position(|w| w == b"-----BEGIN").filter(|at| *at > 0) {
        if let Some(end) = body[at..].iter().position(|b| *b == b'\n').filter(|e| *e > 0) {
            out.tag.signature_type = signature_type(&body[at..at + end]) as i32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_commit_like_upstream() {
        let raw = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent 1111111111111111111111111111111111111111\nauthor A U Thor <a@example.com> 1600000000 +0200\ncommitter C <c@example.com> 1600000001 -0130\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n -----END PGP SIGNATURE-----\n\nsubject line\r\n\nbody\n";
        let c = parse_commit("abc", raw);
        assert_eq!(c.tree_id, "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
        assert_eq!(c.parent_ids, vec!["1111111111111111111111111111111111111111"]);
        assert_eq!(c.subject, b"subject line");
        assert_eq!(c.body, b"subject line\r\n\nbody\n");
        assert_eq!(c.body_size, 20);
        let a = c.author.unwrap();
        assert_eq!((a.name.as_slice(), a.email.as_slice()), (&b"A U Thor"[..], &b"a@example.com"[..]));
        assert_eq!(a.date.unwrap().seconds, 1_600_000_000);
        assert_eq!(a.timezone, b"+0200");
        assert_eq!(c.committer.unwrap().timezone, b"-0130");
        assert_eq!(c.signature_type, SignatureType::Pgp as i32);
    }

    #[test]
    fn odd_authors_and_long_bodies() {
        assert_eq!(parse_author(b"No Email").name, b"No Email");
        let bad_date = parse_author(b"N <e> notanumber +0000");
        assert_eq!(bad_date.date.unwrap().seconds, FALLBACK_SECONDS);
        assert_eq!(parse_author(b"N <e> 99999999999999999 +0000").date.unwrap().seconds, FALLBACK_SECONDS);
        assert!(parse_author(b"N <e>").date.is_none());
        let long = [b"tree x\n\n".to_vec(), vec![b'x'; 20_000]].concat();
        let c = parse_commit("a", &long);
        assert_eq!((c.body.len(), c.body_size), (MAX_MESSAGE_SIZE, 20_000));
    }
}
