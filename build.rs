//! Generates the gRPC code for Gitaly's wire protocol (package `gitaly`) and our own admin API (package
//! `rgitaly`) with a vendored `protoc`, so a fresh machine needs nothing but cargo; then the method
//! registry (`registry.rs`): one entry per RPC with its streaming kinds and the `lint.proto` annotations
//! (op type, scope, target/additional repository and storage fields), read from the same descriptors, as
//! upstream's Praefect reads them, and where a write names its user (for the hook chain). The build fails on an RPC of package `gitaly` whose annotations are
//! missing or point nowhere, as upstream's proto lint does.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from("proto");
    let mut protos: Vec<PathBuf> = std::fs::read_dir(&proto_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    protos.sort();
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-changed=proto");

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let includes = vec![proto_dir, protoc_bin_vendored::include_path()?];
    // prost-build reads PROTOC; point it at the vendored binary.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let descriptor = out.join("descriptor.bin");
    // The fields that carry packs and archives are `bytes::Bytes`: a request's data is a slice of the
    // buffer it was decoded from, and a response's a slice of one read buffer reused across messages, so
    // bulk transfers neither copy each chunk again nor allocate (and page-fault) a fresh buffer for it.
    let mut builder = tonic_prost_build::configure();
    for field in BULK_FIELDS {
        builder = builder.bytes(field);
    }
    builder.generate_default_stubs(true).file_descriptor_set_path(&descriptor).compile_protos(&protos, &includes)?;

    let set = FileDescriptorSet::decode(std::fs::read(&descriptor)?.as_slice())?;
    std::fs::write(out.join("registry.rs"), registry(&set)?)?;
    std::fs::write(out.join("bulk.rs"), bulk(&set)?)?;
    Ok(())
}

// Just enough of descriptor.proto to read our custom options, which prost-types drops as unknown fields.

#[derive(Clone, PartialEq, Message)]
struct FileDescriptorSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<FileDescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct FileDescriptorProto {
    #[prost(string, tag = "2")]
    package: String,
    #[prost(message, repeated, tag = "4")]
    message_type: Vec<DescriptorProto>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceDescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct DescriptorProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    field: Vec<FieldDescriptorProto>,
    #[prost(message, repeated, tag = "3")]
    nested_type: Vec<DescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct FieldDescriptorProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "3")]
    number: i32,
    /// 11 is TYPE_MESSAGE.
    #[prost(int32, tag = "5")]
    r#type: i32,
    #[prost(string, tag = "6")]
    type_name: String,
    #[prost(message, optional, tag = "8")]
    options: Option<FieldOptions>,
}

/// `lint.proto`'s field options.
#[derive(Clone, PartialEq, Message)]
struct FieldOptions {
    #[prost(bool, tag = "91233")]
    storage: bool,
    #[prost(bool, tag = "91234")]
    repository: bool,
    #[prost(bool, tag = "91235")]
    target_repository: bool,
    #[prost(bool, tag = "91236")]
    additional_repository: bool,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceDescriptorProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    method: Vec<MethodDescriptorProto>,
    #[prost(message, optional, tag = "3")]
    options: Option<ServiceOptions>,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceOptions {
    #[prost(bool, tag = "82302")]
    intercepted: bool,
}

#[derive(Clone, PartialEq, Message)]
struct MethodDescriptorProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    input_type: String,
    #[prost(message, optional, tag = "4")]
    options: Option<MethodOptions>,
    #[prost(bool, tag = "5")]
    client_streaming: bool,
    #[prost(bool, tag = "6")]
    server_streaming: bool,
}

#[derive(Clone, PartialEq, Message)]
struct MethodOptions {
    #[prost(message, optional, tag = "82303")]
    op_type: Option<OperationMsg>,
}

#[derive(Clone, PartialEq, Message)]
struct OperationMsg {
    /// UNKNOWN = 0, MUTATOR = 1, ACCESSOR = 2.
    #[prost(int32, tag = "1")]
    op: i32,
    /// REPOSITORY = 0, STORAGE = 2.
    #[prost(int32, tag = "2")]
    scope_level: i32,
}

const TYPE_MESSAGE: i32 = 11;
const REPOSITORY: &str = ".gitaly.Repository";

/// Every message by its full name (`.package.Name`, nested ones included).
fn messages(set: &FileDescriptorSet) -> HashMap<String, &DescriptorProto> {
    fn walk<'a>(prefix: &str, m: &'a DescriptorProto, out: &mut HashMap<String, &'a DescriptorProto>) {
        let name = format!("{prefix}.{}", m.name);
        for n in &m.nested_type {
            walk(&name, n, out);
        }
        out.insert(name, m);
    }
    let mut out = HashMap::new();
    for f in &set.file {
        for m in &f.message_type {
            walk(&format!(".{}", f.package), m, &mut out);
        }
    }
    out
}

/// Field-number paths from `msg` to the fields `marked` selects. A marked field of type Repository ends a
/// path; a marked field of another message type (an ObjectPool) continues to its `(repository)` field;
/// unmarked message fields (a oneof header) are searched too.
fn paths(
    all: &HashMap<String, &DescriptorProto>,
    msg: &str,
    marked: fn(&FieldOptions) -> bool,
    seen: &mut Vec<String>,
) -> Vec<Vec<u32>> {
    let Some(m) = all.get(msg) else { return Vec::new() };
    if seen.iter().any(|s| s == msg) {
        return Vec::new();
    }
    seen.push(msg.to_string());
    let mut out = Vec::new();
    for f in &m.field {
        let opts = f.options.clone().unwrap_or_default();
        let n = f.number as u32;
        if marked(&opts) {
            if f.r#type != TYPE_MESSAGE || f.type_name == REPOSITORY {
                out.push(vec![n]);
            } else {
                for sub in paths(all, &f.type_name, |o| o.repository, &mut Vec::new()) {
                    out.push([vec![n], sub].concat());
                }
            }
        } else if f.r#type == TYPE_MESSAGE && f.type_name != REPOSITORY && f.type_name.starts_with(".gitaly.") {
            for sub in paths(all, &f.type_name, marked, seen) {
                out.push([vec![n], sub].concat());
            }
        }
    }
    seen.pop();
    out
}

/// Field-number paths from `msg` to fields of type `gitaly.User` (the user a write is made for, which
/// upstream does not annotate), through unmarked message fields such as a oneof header. Where there are
/// several (UserSquash's `user` and `author`), the one named `user`.
fn user_path(all: &HashMap<String, &DescriptorProto>, msg: &str) -> Vec<Vec<u32>> {
    let mut named = Vec::new();
    let paths = user_paths(all, msg, &mut Vec::new(), &mut named);
    if paths.len() > 1 {
        return paths.into_iter().zip(named).filter(|(_, n)| n == "user").map(|(p, _)| p).collect();
    }
    paths
}

fn user_paths(
    all: &HashMap<String, &DescriptorProto>,
    msg: &str,
    seen: &mut Vec<String>,
    names: &mut Vec<String>,
) -> Vec<Vec<u32>> {
    let Some(m) = all.get(msg) else { return Vec::new() };
    if seen.iter().any(|s| s == msg) {
        return Vec::new();
    }
    seen.push(msg.to_string());
    let mut out = Vec::new();
    for f in m.field.iter().filter(|f| f.r#type == TYPE_MESSAGE) {
        let n = f.number as u32;
        if f.type_name == ".gitaly.User" {
            out.push(vec![n]);
            names.push(f.name.clone());
        } else if f.type_name != REPOSITORY && f.type_name.starts_with(".gitaly.") {
            for sub in user_paths(all, &f.type_name, seen, names) {
                out.push([vec![n], sub].concat());
            }
        }
    }
    seen.pop();
    out
}

fn one_path(paths: Vec<Vec<u32>>, what: &str, method: &str) -> Result<Option<Vec<u32>>, String> {
    match paths.len() {
        0 => Ok(None),
        1 => Ok(paths.into_iter().next()),
        _ => Err(format!("{method}: more than one {what} field: {paths:?}")),
    }
}

fn registry(set: &FileDescriptorSet) -> Result<String, String> {
    let all = messages(set);
    let mut entries = Vec::new();
    for f in &set.file {
        for s in &f.service {
            let service = format!("{}.{}", f.package, s.name);
            let intercepted = s.options.as_ref().is_some_and(|o| o.intercepted);
            for m in &s.method {
                let full = format!("/{service}/{}", m.name);
                let op = m.options.as_ref().and_then(|o| o.op_type.clone());
                let (op, scope) = match (&op, f.package.as_str(), intercepted) {
                    (Some(o), _, _) => {
                        let op = match o.op {
                            1 => "Op::Mutator",
                            2 => "Op::Accessor",
                            _ => return Err(format!("{full}: op_type without an operation")),
                        };
                        let scope = match o.scope_level {
                            0 => "Some(Scope::Repository)",
                            2 => "Some(Scope::Storage)",
                            other => return Err(format!("{full}: unknown scope_level {other}")),
                        };
                        (op, scope)
                    }
                    (None, "gitaly", false) => return Err(format!("{full}: missing (gitaly.op_type)")),
                    (None, _, _) => ("Op::Unknown", "None"),
                };
                let target = one_path(
                    paths(&all, &m.input_type, |o| o.target_repository, &mut Vec::new()),
                    "target repository",
                    &full,
                )?;
                let additional = one_path(
                    paths(&all, &m.input_type, |o| o.additional_repository, &mut Vec::new()),
                    "additional repository",
                    &full,
                )?;
                let storage = one_path(paths(&all, &m.input_type, |o| o.storage, &mut Vec::new()), "storage", &full)?;
                let user = one_path(user_path(&all, &m.input_type), "user", &full)?;
                if scope == "Some(Scope::Repository)" && target.is_none() {
                    return Err(format!("{full}: repository scope without a target repository field"));
                }
                if scope == "Some(Scope::Storage)" && storage.is_none() {
                    return Err(format!("{full}: storage scope without a storage field"));
                }
                let path = |p: &Option<Vec<u32>>| match p {
                    Some(p) => format!("Some(&{p:?})"),
                    None => "None".to_string(),
                };
                entries.push((
                    full.clone(),
                    format!(
                        "    Method {{ full: {full:?}, service: {service:?}, name: {name:?}, request: {req:?}, \
                         client_streaming: {cs}, server_streaming: {ss}, op: {op}, scope: {scope}, \
                         target_repository: {t}, additional_repository: {a}, storage: {st}, user: {u} }},\n",
                        name = m.name,
                        req = m.input_type.trim_start_matches('.'),
                        cs = m.client_streaming,
                        ss = m.server_streaming,
                        t = path(&target),
                        a = path(&additional),
                        st = path(&storage),
                        u = path(&user),
                    ),
                ));
            }
        }
    }
    entries.sort();
    let mut out = String::from("// Generated by build.rs from the protos' descriptors; sorted by full method name.\n");
    let _ = writeln!(out, "pub static METHODS: &[Method] = &[");
    for (_, e) in entries {
        out.push_str(&e);
    }
    out.push_str("];\n");
    Ok(out)
}

/// `impl Bulk` for each message with [`BULK_FIELDS`]: their field numbers from the descriptors, for
/// `src/bulk.rs`, which frames those fields without copying them.
fn bulk(set: &FileDescriptorSet) -> Result<String, String> {
    let all = messages(set);
    let mut order: Vec<&str> = Vec::new();
    let mut fields: HashMap<&str, Vec<(String, i32)>> = HashMap::new();
    for full in BULK_FIELDS {
        let (msg, field) = full.rsplit_once('.').ok_or_else(|| format!("bad bulk field {full}"))?;
        let m = all.get(msg).ok_or_else(|| format!("bulk field {full}: no message {msg}"))?;
        let f = m.field.iter().find(|f| f.name == field).ok_or_else(|| format!("bulk field {full}: no field"))?;
        if !fields.contains_key(msg) {
            order.push(msg);
        }
        fields.entry(msg).or_default().push((f.name.clone(), f.number));
    }
    let mut out = String::new();
    for msg in order {
        let name = msg.strip_prefix(".gitaly.").filter(|n| !n.contains('.'));
        let rust = camel(name.ok_or_else(|| format!("bulk message {msg}: only top-level gitaly messages"))?);
        let _ = writeln!(out, "impl Bulk for crate::proto::gitaly::{rust} {{");
        let _ = writeln!(out, "    fn take_bulk(&mut self) -> Option<(u32, Bytes)> {{");
        for (name, number) in &fields[msg] {
            let _ = writeln!(
                out,
                "        if !self.{name}.is_empty() {{ return Some(({number}, std::mem::take(&mut self.{name}))); }}"
            );
        }
        out.push_str("        None\n    }\n}\n");
    }
    Ok(out)
}

/// A message's Rust name as prost writes it: `SSHUploadPackResponse` → `SshUploadPackResponse`.
fn camel(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        if c.is_ascii_uppercase() && prev_upper && !next_lower {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Fields holding bulk data (see `main`).
const BULK_FIELDS: &[&str] = &[
    ".gitaly.SSHUploadPackRequest.stdin",
    ".gitaly.SSHUploadPackResponse.stdout",
    ".gitaly.SSHUploadPackResponse.stderr",
    ".gitaly.SSHReceivePackRequest.stdin",
    ".gitaly.SSHReceivePackResponse.stdout",
    ".gitaly.SSHReceivePackResponse.stderr",
    ".gitaly.SSHUploadArchiveRequest.stdin",
    ".gitaly.SSHUploadArchiveResponse.stdout",
    ".gitaly.SSHUploadArchiveResponse.stderr",
    ".gitaly.PostUploadPackRequest.data",
    ".gitaly.PostUploadPackResponse.data",
    ".gitaly.PostReceivePackRequest.data",
    ".gitaly.PostReceivePackResponse.data",
    ".gitaly.InfoRefsResponse.data",
    ".gitaly.GetArchiveResponse.data",
    ".gitaly.CreateBundleResponse.data",
    ".gitaly.RawBlameResponse.data",
    ".gitaly.RawDiffResponse.data",
    ".gitaly.RawPatchResponse.data",
    ".gitaly.GetBlobResponse.data",
    ".gitaly.GetBlobsResponse.data",
    ".gitaly.TreeEntryResponse.data",
];
