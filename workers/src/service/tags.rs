//! UserCreateTag (lightweight or annotated) and UserDeleteTag.

use rgitaly::git::repo::{Repo, ZERO_OID};
use rgitaly::git::{GitCmdFactory, Sub};
use rgitaly::proto::gitaly::*;
use tonic::Status;

use super::{internal, text, unix_time, Target};

fn commit_error(reference: &str) -> String {
    format!("Gitlab::Git::CommitError: Could not update {reference}. Please refresh and try again.")
}

pub async fn create(
    git: &GitCmdFactory,
    t: &Target,
    req: UserCreateTagRequest,
) -> Result<UserCreateTagResponse, Status> {
    if req.tag_name.is_empty() {
        return Err(Status::invalid_argument("empty tag name"));
    }
    let name = text(&req.tag_name);
    let reference = format!("refs/tags/{name}");
    if name.contains(' ') {
        return Err(Status::unknown(commit_error(&reference)));
    }
    let Some(user) = req.user.as_ref() else { return Err(Status::invalid_argument("empty user")) };
    if req.target_revision.is_empty() {
        return Err(Status::invalid_argument("empty target revision"));
    }
    if req.message.contains(&0) {
        return Err(Status::unknown("ArgumentError: string contains null byte"));
    }
    let repo = Repo::new(git, &t.repo);
    let target_rev = text(&req.target_revision);
    let not_found = || Status::failed_precondition(format!("revspec '{target_rev}' not found"));
    let target = repo.resolve(&target_rev).await.map_err(internal)?.ok_or_else(not_found)?;
    let target_type = repo.object_type(&target).await.map_err(internal)?.ok_or_else(not_found)?;
    let (peeled, peeled_type) = if target_type == "tag" {
        let p = repo.resolve(&format!("{target}^{{}}")).await.map_err(internal)?.ok_or_else(not_found)?;
        let kind = repo.object_type(&p).await.map_err(internal)?.ok_or_else(not_found)?;
        (p, kind)
    } else {
        (target.clone(), target_type.clone())
    };

    // Annotated when the message has any non-space byte (Go's \S).
    let annotated = req.message.iter().any(|b| !matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' '));
    let (new_value, message) = if annotated {
        let when = unix_time(req.timestamp.as_ref())?;
        let header = format!(
            "object {target}\ntype {target_type}\ntag {name}\ntagger {} <{}> {when} +0000\n\n",
            text(&user.name),
            text(&user.email)
        );
        if header.matches('\n').count() != 5 {
            return Err(Status::unknown(
                "Rugged::InvalidError: failed to parse signature - expected prefix doesn't match actual",
            ));
        }
        let mut data = header.into_bytes();
        data.extend_from_slice(&req.message);
        let oid = git
            .command(&t.repo, Sub::Mktag)
            .output_with_stdin(data)
            .await
            .map_err(|_| Status::not_found(commit_error(&reference)))?
            .stdout_text();
        (oid, Some(req.message.clone()))
    } else {
        (peeled.clone(), None)
    };

    // The name goes into `update-ref -z --stdin`, where a NUL ends a field: `commit` (which needs no space)
    // would apply an update of an existing tag before git failed. No ref name holds a NUL; upstream ends
    // such a name with Internal too (check-ref-format cannot take it as an argument).
    if req.tag_name.contains(&0) {
        return Err(Status::internal(format!("invalid tag name {name:?}: contains a NUL byte")));
    }
    match super::update(t, &repo, &reference, &new_value, ZERO_OID).await? {
        super::Hooked::Done => {}
        super::Hooked::Refused(pre_receive_error) => {
            return Ok(UserCreateTagResponse { tag: None, exists: false, pre_receive_error })
        }
        super::Hooked::Raced => {
            // An existing tag is an answer, not an error; an impossible name is an error.
            if repo.valid_ref_name(&reference).await.map_err(internal)? {
                return Ok(UserCreateTagResponse { tag: None, exists: true, pre_receive_error: String::new() });
            }
            return Err(Status::unknown(commit_error(&reference)));
        }
    }
    let target_commit = if peeled_type == "commit" { repo.read_commit(&peeled).await.map_err(internal)? } else { None };
    let message_size = message.as_ref().map(|m| m.len() as i64).unwrap_or(0);
    Ok(UserCreateTagResponse {
        tag: Some(Tag {
            name: req.tag_name,
            id: new_value,
            target_commit,
            message: message.unwrap_or_default(),
            message_size,
            ..Default::default()
        }),
        exists: false,
        pre_receive_error: String::new(),
    })
}

pub async fn delete(
    git: &GitCmdFactory,
    t: &Target,
    req: UserDeleteTagRequest,
) -> Result<UserDeleteTagResponse, Status> {
    if req.tag_name.is_empty() {
        return Err(Status::invalid_argument("empty tag name"));
    }
    if req.user.is_none() {
        return Err(Status::invalid_argument("empty user"));
    }
    let repo = Repo::new(git, &t.repo);
    let name = text(&req.tag_name);
    let reference = format!("refs/tags/{name}");
    // A NUL cannot be in a ref name (nor in an argument to git): not found, as upstream answers.
    let current = match name.contains([' ', '\n', '\0']) {
        true => None,
        false => repo.resolve(&reference).await.map_err(internal)?,
    }
    .ok_or_else(|| Status::failed_precondition(format!("tag not found: {name}")))?;
    match super::update(t, &repo, &reference, ZERO_OID, &current).await? {
        super::Hooked::Refused(pre_receive_error) => Ok(UserDeleteTagResponse { pre_receive_error }),
        super::Hooked::Done => Ok(UserDeleteTagResponse { pre_receive_error: String::new() }),
        super::Hooked::Raced => Err(super::could_not_update(&reference)),
    }
}
