//! WikiUpdatePage: new content (and maybe format) for the page at `page_path`, and a rename when the
//! title says another place, in one commit, as upstream's update-then-rename does. The title is a path
//! from the wiki's root (`sub dir/Page` moves the page into `sub-dir/`). A rename onto another page's
//! name is refused with gollum's duplicate text; upstream also fails a format change combined with a
//! rename (a libgit2 index error), which here simply does both.

use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::*;
use tonic::{Status, Streaming};

use super::{commit_change, duplicate, gollum, read_content, validate_details, write_content, Edit, Plan};
use crate::service::Target;

pub async fn update_page(
    git: &std::sync::Arc<GitCmdFactory>,
    t: &Target,
    mut stream: Streaming<WikiUpdatePageRequest>,
) -> Result<WikiUpdatePageResponse, Status> {
    let first = stream.message().await?.unwrap_or_default();
    let problem = if first.page_path.is_empty() {
        Some("empty Page Path")
    } else if first.title.is_empty() {
        Some("empty Title")
    } else if first.format.is_empty() {
        Some("empty Format")
    } else {
        None
    };
    if let Some(p) = problem {
        return Err(Status::invalid_argument(format!("WikiUpdatePage: {p}")));
    }
    validate_details("WikiUpdatePage", first.commit_details.as_ref())?;
    if !gollum::known_format(&first.format) {
        return Err(Status::invalid_argument(format!("WikiUpdatePage: unknown format {:?}", first.format)));
    }
    let content = read_content(&mut stream, &first, |m| &m.content).await?;
    let blob = write_content(t, content)?;
    let details = first.commit_details.clone().unwrap_or_default();
    let query = gollum::query_for_path(&first.page_path);
    let not_found = || Status::not_found(String::from_utf8_lossy(&first.page_path).into_owned());
    commit_change(git, t, &details, |odb, tip| {
        let page = tip.map(|tip| tip.find(odb, &query)).transpose()?.flatten().ok_or_else(not_found)?;
        let tip = tip.expect("a page was found");
        let (dir, filename) = gollum::split_path(&page.path);
        let stem = gollum::strip_ext(filename);
        // The rename: where the title puts the page, unless it names the page's own place.
        let title: Vec<u8> = first.title.iter().map(|b| if *b == b' ' { b'-' } else { *b }).collect();
        let (title_dir, title_name) = gollum::split_path(&title);
        let title_dir = title_dir.strip_prefix(b"/").unwrap_or(title_dir);
        let renamed = !(title_dir == dir && title_name == stem);
        let new_path = if renamed {
            gollum::new_page_path(&first.title, &first.format)
        } else if first.format == page.format {
            Some(page.path.clone())
        } else {
            let mut name = dir.to_vec();
            if !name.is_empty() {
                name.push(b'/');
            }
            name.extend_from_slice(stem);
            gollum::new_page_path(&name, &first.format)
        }
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "WikiUpdatePage: invalid title {:?}",
                String::from_utf8_lossy(&first.title)
            ))
        })?;
        if renamed {
            if let Some(message) = duplicate(odb, tip, &new_path, Some(&page.path))? {
                return Err(Status::failed_precondition(message));
            }
        }
        let mut edits = Vec::new();
        if new_path != page.path {
            edits.push(Edit { path: page.path.clone(), blob: None });
        }
        edits.push(Edit { path: new_path, blob: Some(blob.clone()) });
        Ok(Plan::<()>::Commit(edits))
    })
    .await?;
    Ok(WikiUpdatePageResponse::default())
}
