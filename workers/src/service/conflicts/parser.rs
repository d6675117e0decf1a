//! A conflicted file as GitLab's conflict editor sees it. Rails shows the lines between git's conflict
//! markers as sections and names each one `<sha1 of the path>_<old line>_<new line>` (the line numbers in
//! the "theirs" and "ours" files where the section starts); ResolveConflicts answers with a choice per
//! section name, so these numbers and names must be exactly upstream's (v13.12.0, itself a port of the
//! Ruby parser GitLab used before). "head" keeps our lines, "origin" their lines.

use std::collections::HashMap;

use sha1::{Digest, Sha1};

/// Files larger than this are not offered for resolution, as upstream.
const FILE_LIMIT: usize = 200 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    /// Their lines (between `=======` and `>>>>>>>`).
    Old,
    /// Our lines (between `<<<<<<<` and `=======`).
    New,
    /// A `\ No newline at end of file` line and what follows it.
    NoNewline,
}

struct Line {
    old: usize,
    new: usize,
    payload: Vec<u8>,
    section: Section,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("merging is not supported for file")]
    Unmergeable,
    #[error("unexpected conflict delimiter")]
    UnexpectedDelimiter,
    #[error("missing last delimiter")]
    MissingEndDelimiter,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Missing resolution for section ID: {0}")]
pub struct MissingSection(pub String);

pub struct ConflictFile {
    path: Vec<u8>,
    lines: Vec<Line>,
}

/// What a conflict marker line is, given the labels git wrote after `<<<<<<<` and `>>>>>>>` (the commit
/// names merge-tree was given; a renamed file's label has `:<path>` after it).
fn marker(line: &[u8], ours: &[u8], theirs: &[u8]) -> Option<Section> {
    let labelled = |prefix: &[u8], label: &[u8]| {
        line.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(label))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b":"))
    };
    if labelled(b"<<<<<<< ", ours) {
        Some(Section::New)
    } else if line == b"=======" {
        Some(Section::Old)
    } else if labelled(b">>>>>>> ", theirs) {
        Some(Section::None)
    } else {
        None
    }
}

/// Reads `content` (git's merge result for `path`, markers labelled `ours` and `theirs`) into sections.
pub fn parse(content: &[u8], path: &[u8], ours: &[u8], theirs: &[u8]) -> Result<ConflictFile, ParseError> {
    if content.is_empty() || content.len() > FILE_LIMIT {
        return Err(ParseError::Unmergeable);
    }
    let mut file = ConflictFile { path: path.to_vec(), lines: Vec::new() };
    let (mut old, mut new) = (1, 1);
    let mut current = Section::None;
    let body = content.strip_suffix(b"\n").unwrap_or(content);
    for l in body.split(|b| *b == b'\n') {
        match marker(l, ours, theirs) {
            Some(Section::New) if current != Section::None => return Err(ParseError::UnexpectedDelimiter),
            Some(Section::Old) if current != Section::New => return Err(ParseError::UnexpectedDelimiter),
            Some(Section::None) if current != Section::Old => return Err(ParseError::UnexpectedDelimiter),
            Some(next) => current = next,
            None if l.first() == Some(&b'\\') => {
                current = Section::NoNewline;
                file.lines.push(Line { old, new, payload: l.to_vec(), section: current });
            }
            None => {
                file.lines.push(Line { old, new, payload: l.to_vec(), section: current });
                if current != Section::New {
                    old += 1;
                }
                if current != Section::Old {
                    new += 1;
                }
            }
        }
    }
    if matches!(current, Section::Old | Section::New) {
        return Err(ParseError::MissingEndDelimiter);
    }
    Ok(file)
}

impl ConflictFile {
    fn section_id(&self, l: &Line) -> String {
        format!("{}_{}_{}", hex::encode(Sha1::digest(&self.path)), l.old, l.new)
    }

    /// Every section's name, in order (what Rails offers the user to choose from).
    #[cfg(test)]
    pub fn section_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let mut inside = false;
        for l in &self.lines {
            if l.section == Section::None {
                inside = false;
            } else if !inside {
                inside = true;
                ids.push(self.section_id(l));
            }
        }
        ids
    }

    /// The file with each section replaced by the side chosen for it; a trailing newline when ours had one.
    pub fn resolve(&self, sections: &HashMap<String, String>, our_newline: bool) -> Result<Vec<u8>, MissingSection> {
        let mut out: Vec<&[u8]> = Vec::with_capacity(self.lines.len());
        let mut id: Option<String> = None;
        for l in &self.lines {
            if l.section == Section::None {
                id = None;
                out.push(&l.payload);
                continue;
            }
            let id = id.get_or_insert_with(|| self.section_id(l));
            let keep = match sections.get(id.as_str()).map(String::as_str) {
                Some("head") => l.section == Section::New,
                Some("origin") => l.section == Section::Old,
                _ => return Err(MissingSection(id.clone())),
            };
            if keep {
                out.push(&l.payload);
            }
        }
        let mut resolved = out.join(&b'\n');
        if our_newline {
            resolved.push(b'\n');
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &[u8] = b"1111111111111111111111111111111111111111";
    const THEIRS: &[u8] = b"2222222222222222222222222222222222222222";

    fn conflicted() -> Vec<u8> {
        let mut c = Vec::new();
        c.extend_from_slice(b"a\n<<<<<<< ");
        c.extend_from_slice(OURS);
        c.extend_from_slice(b"\nours 1\nours 2\n=======\ntheirs 1\n>>>>>>> ");
        c.extend_from_slice(THEIRS);
        c.extend_from_slice(b"\nb\n<<<<<<< ");
        c.extend_from_slice(OURS);
        c.extend_from_slice(b":renamed\nx\n=======\ny\n>>>>>>> ");
        c.extend_from_slice(THEIRS);
        c.extend_from_slice(b":renamed\nc\n");
        c
    }

    #[test]
    fn sections_are_named_by_path_and_line_numbers() {
        let f = parse(&conflicted(), b"f.txt", OURS, THEIRS).unwrap();
        let sha = hex::encode(Sha1::digest(b"f.txt"));
        // First section: line 2 in both files. Second: "b" is line 4 in ours (a, ours 1, ours 2, b) and
        // line 3 in theirs (a, theirs 1, b); the section starts one line later in each.
        assert_eq!(f.section_ids(), vec![format!("{sha}_2_2"), format!("{sha}_4_5")]);
    }

    #[test]
    fn resolves_each_section_to_the_chosen_side() {
        let f = parse(&conflicted(), b"f.txt", OURS, THEIRS).unwrap();
        let ids = f.section_ids();
        let choice = HashMap::from([(ids[0].clone(), "head".to_string()), (ids[1].clone(), "origin".to_string())]);
        assert_eq!(f.resolve(&choice, true).unwrap(), b"a\nours 1\nours 2\nb\ny\nc\n");
        let choice = HashMap::from([(ids[0].clone(), "origin".to_string()), (ids[1].clone(), "head".to_string())]);
        assert_eq!(f.resolve(&choice, false).unwrap(), b"a\ntheirs 1\nb\nx\nc");
    }

    #[test]
    fn a_section_without_a_valid_choice_is_missing() {
        let f = parse(&conflicted(), b"f.txt", OURS, THEIRS).unwrap();
        let ids = f.section_ids();
        let choice = HashMap::from([(ids[0].clone(), "head".to_string()), (ids[1].clone(), "both".to_string())]);
        assert_eq!(f.resolve(&choice, true), Err(MissingSection(ids[1].clone())));
        assert_eq!(f.resolve(&HashMap::new(), true).unwrap_err().0, ids[0]);
    }

    #[test]
    fn bad_markers_are_refused() {
        let mut c = b"<<<<<<< ".to_vec();
        c.extend_from_slice(OURS);
        c.extend_from_slice(b"\nx\n");
        assert_eq!(parse(&c, b"f", OURS, THEIRS).err(), Some(ParseError::MissingEndDelimiter));
        assert_eq!(parse(b"=======\n", b"f", OURS, THEIRS).err(), Some(ParseError::UnexpectedDelimiter));
        assert_eq!(parse(b"", b"f", OURS, THEIRS).err(), Some(ParseError::Unmergeable));
        assert_eq!(parse(&vec![b'a'; FILE_LIMIT + 1], b"f", OURS, THEIRS).err(), Some(ParseError::Unmergeable));
        // A marker with another label is content, as in upstream's parser.
        let f = parse(b"<<<<<<< someone else\n", b"f", OURS, THEIRS).unwrap();
        assert!(f.section_ids().is_empty());
    }
}
