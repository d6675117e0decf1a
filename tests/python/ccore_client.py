"""Drives a running rgitaly with gRPC C-core (Python grpcio, the same core as Ruby's grpc gem that GitLab
Rails uses), with default channel options: unary, server-streaming and bidirectional calls, a failing call
and an unauthenticated one. Stubs are generated from the project's own protos at run time.

usage: ccore_client.py --proto-dir DIR --target TARGET [--root-cert PEM] --token SECRET
                       --storage NAME --repo RELATIVE_PATH --commit ID --big-oid ID --big-size N
Prints one line per check and exits non-zero at the first failure.
"""
import argparse
import glob
import hashlib
import hmac
import importlib
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc


def generate(proto_dir, out):
    wkt = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(proto_dir, "*.proto")))
    args = ["protoc", "-I" + proto_dir, "-I" + wkt, "--python_out=" + out, "--grpc_python_out=" + out] + files
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)


def token(secret):
    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), ts.encode(), hashlib.sha256).hexdigest()
    return "Bearer v2.%s.%s" % (mac, ts)


def check(name, cond, detail=""):
    if not cond:
        print("FAIL", name, detail)
        sys.exit(1)
    print("ok", name)


def main():
    ap = argparse.ArgumentParser()
    for a in ("--proto-dir", "--target", "--token", "--storage", "--repo", "--commit", "--big-oid", "--big-size"):
        ap.add_argument(a, required=True)
    ap.add_argument("--root-cert")
    o = ap.parse_args()

    out = tempfile.mkdtemp(prefix="rgitaly-py-")
    generate(o.proto_dir, out)
    shared = importlib.import_module("shared_pb2")
    server, server_grpc = importlib.import_module("server_pb2"), importlib.import_module("server_pb2_grpc")
    repo_pb, repo_grpc = importlib.import_module("repository_service_pb2"), importlib.import_module("repository_service_pb2_grpc")
    commit, commit_grpc = importlib.import_module("commit_pb2"), importlib.import_module("commit_pb2_grpc")
    ref, ref_grpc = importlib.import_module("ref_pb2"), importlib.import_module("ref_pb2_grpc")
    blob, blob_grpc = importlib.import_module("blob_pb2"), importlib.import_module("blob_pb2_grpc")
    http, http_grpc = importlib.import_module("smarthttp_pb2"), importlib.import_module("smarthttp_pb2_grpc")
    ssh, ssh_grpc = importlib.import_module("ssh_pb2"), importlib.import_module("ssh_pb2_grpc")

    if o.root_cert:
        creds = grpc.ssl_channel_credentials(root_certificates=open(o.root_cert, "rb").read())
        channel = grpc.secure_channel(o.target, creds)
    else:
        channel = grpc.insecure_channel(o.target)
    md = [("authorization", token(o.token))]
    repo = shared.Repository(storage_name=o.storage, relative_path=o.repo)

    info = server_grpc.ServerServiceStub(channel).ServerInfo(server.ServerInfoRequest(), metadata=md, timeout=20)
    check("ServerInfo", info.git_version != "", repr(info))

    exists = repo_grpc.RepositoryServiceStub(channel).RepositoryExists(
        repo_pb.RepositoryExistsRequest(repository=repo), metadata=md, timeout=20)
    check("RepositoryExists", exists.exists)

    found = commit_grpc.CommitServiceStub(channel).FindCommit(
        commit.FindCommitRequest(repository=repo, revision=b"HEAD"), metadata=md, timeout=20)
    check("FindCommit", found.commit.id == o.commit, found.commit.id)

    names = [n for r in ref_grpc.RefServiceStub(channel).FindAllBranchNames(
        ref.FindAllBranchNamesRequest(repository=repo), metadata=md, timeout=20) for n in r.names]
    check("FindAllBranchNames (server streaming)", b"refs/heads/main" in names, repr(names))

    adv = b"".join(r.data for r in http_grpc.SmartHTTPServiceStub(channel).InfoRefsUploadPack(
        http.InfoRefsRequest(repository=repo), metadata=md, timeout=20))
    check("InfoRefsUploadPack (server streaming)", o.commit.encode() in adv and adv.startswith(b"001e# service="))

    # A large blob: every piece must decode, and the whole must hash to its id.
    def git_oid(data):
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    pieces = list(blob_grpc.BlobServiceStub(channel).GetBlob(
        blob.GetBlobRequest(repository=repo, oid=o.big_oid, limit=-1), metadata=md, timeout=20))
    data = b"".join(p.data for p in pieces)
    check("GetBlob of a large blob (server streaming)",
          pieces[0].oid == o.big_oid and pieces[0].size == int(o.big_size) and git_oid(data) == o.big_oid
          and len(pieces) > 1, repr((pieces[0].oid, pieces[0].size, len(data), len(pieces))))
    entry = b"".join(p.data for p in commit_grpc.CommitServiceStub(channel).TreeEntry(
        commit.TreeEntryRequest(repository=repo, revision=b"HEAD", path=b"big.txt"), metadata=md, timeout=20))
    check("TreeEntry of a large blob", git_oid(entry) == o.big_oid, repr(len(entry)))

    def requests():
        yield ssh.SSHUploadPackRequest(repository=repo)
        yield ssh.SSHUploadPackRequest(stdin=b"0000")

    stdout, status = b"", None
    for r in ssh_grpc.SSHServiceStub(channel).SSHUploadPack(requests(), metadata=md, timeout=20):
        stdout += r.stdout
        if r.HasField("exit_status"):
            status = r.exit_status.value
    # Like upstream, upload-pack's exit status is sent only when it is not 0.
    check("SSHUploadPack (bidirectional)", o.commit.encode() in stdout and status in (None, 0), repr((stdout[:80], status)))

    try:
        commit_grpc.CommitServiceStub(channel).FindCommit(
            commit.FindCommitRequest(repository=shared.Repository(storage_name=o.storage, relative_path="missing.git"),
                                     revision=b"HEAD"), metadata=md, timeout=20)
        check("FindCommit on a missing repository fails", False)
    except grpc.RpcError as e:
        check("FindCommit on a missing repository: NOT_FOUND", e.code() == grpc.StatusCode.NOT_FOUND, str(e.code()))

    try:
        server_grpc.ServerServiceStub(channel).ServerInfo(server.ServerInfoRequest(), timeout=20)
        check("call without a token fails", False)
    except grpc.RpcError as e:
        check("call without a token: UNAUTHENTICATED", e.code() == grpc.StatusCode.UNAUTHENTICATED, str(e.code()))
    channel.close()


if __name__ == "__main__":
    main()
