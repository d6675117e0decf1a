#!/usr/bin/env python3
"""Clone and push through rgitaly versus plain git, on one generated repository, in one run.

Generates a repository of >= 100k objects with a >= 200 MB pack (incompressible blobs), starts the release
`rgitaly` on a temporary storage, then alternates, REPEAT times each:

  clone:  git clone --bare --no-local <storage repo>                 (git alone: local transport)
          GIT_SSH_COMMAND=rgitaly-ssh git clone --bare ssh://rgitaly/... (through the daemon)
  push:   git push --mirror <fresh bare repo>                         (git alone, with the same
                                                                      receive.fsckObjects as rgitaly)
          GIT_SSH_COMMAND=rgitaly-ssh git push --mirror ssh://rgitaly/... (through the daemon)

with the order of each pair alternating from round to round and a `sync` before every run (a push writes
the whole pack, and its writeback would otherwise land in whichever run comes next: measured, it added up
to 0.2 s to the second run). Reports each run and medians of wall time, CPU (client git + its children; for rgitaly also the daemon and the git
processes it ran, from /proc/<pid>/stat utime+stime+cutime+cstime), the ratios, and the daemon's peak RSS
(VmHWM). Loopback only; bounded in count and time.

With --overhead it also reports what rgitaly itself costs per run, apart from git: the daemon's own CPU
(its threads, not the git it runs) plus rgitaly-ssh's, the figure to compare two builds by (the totals
above vary by +-15 % from run to run on a busy 2-core machine; this one much less). rgitaly-ssh then runs
under a small Python wrapper that records its CPU, which adds the wrapper's start to the wall times.

usage: benches/transport.py [--objects N] [--blob-size BYTES] [--repeat N] [--keep DIR] [--bin-dir DIR]
                            [--overhead]
Run from the repository root; builds the release binaries first, unless --bin-dir names a directory
holding `rgitaly`, `rgitaly-worker`, `rgitaly-hooks` and `rgitaly-ssh` (e.g. an older build, for an A/B
comparison).
"""
import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK = os.sysconf("SC_CLK_TCK")


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def git_env():
    env = dict(os.environ)
    env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "Bench",
                "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "Bench",
                "GIT_COMMITTER_EMAIL": "b@example.com"})
    env.pop("GIT_DIR", None)
    return env


def generate(repo, objects, blob_size):
    """fast-import stream: commits of 100 new random blobs each, spread over directories."""
    sh("git", "init", "--quiet", "--bare", repo, env=git_env())
    per_commit = 100
    commits = max(1, objects // per_commit)
    p = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=repo, stdin=subprocess.PIPE, env=git_env())
    w = p.stdin
    mark = 0
    for c in range(commits):
        marks = []
        for _ in range(per_commit):
            mark += 1
            data = os.urandom(blob_size)
            w.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(data)))
            w.write(data)
            w.write(b"\n")
            marks.append(mark)
        msg = b"commit %d\n" % c
        w.write(b"commit refs/heads/main\ncommitter Bench <b@example.com> %d +0000\ndata %d\n%s" % (1600000000 + c, len(msg), msg))
        for i, m in enumerate(marks):
            w.write(b"M 100644 :%d d%03d/f%05d_%03d\n" % (m, c % 250, c, i))
        w.write(b"\n")
    w.close()
    if p.wait() != 0:
        sys.exit("fast-import failed")
    sh("git", "-C", repo, "repack", "-a", "-d", "-q", env=git_env())
    count = subprocess.run(["git", "-C", repo, "count-objects", "-v"], capture_output=True, text=True, env=git_env()).stdout
    info = dict(l.split(": ") for l in count.strip().splitlines())
    return int(info["in-pack"]), int(info["size-pack"]) * 1024


def proc_cpu(pid, children=True):
    """utime+stime(+cutime+cstime) of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime is field 14 -> index 11.
    return sum(int(x) for x in fields[11:15 if children else 13]) / CLK


SSH_WRAPPER = """#!{python}
import resource, subprocess, sys
code = subprocess.run([{ssh!r}] + sys.argv[1:]).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
with open({log!r}, "a") as f:
    f.write(f"{{u.ru_utime + u.ru_stime}}\\n")
sys.exit(code)
"""


def overhead(daemon_pid, log, run):
    """The daemon's own CPU plus rgitaly-ssh's during `run()`."""
    d0 = proc_cpu(daemon_pid, children=False)
    open(log, "w").close()
    run()
    with open(log) as f:
        ssh = sum(float(x) for x in f.read().split())
    return proc_cpu(daemon_pid, children=False) - d0 + ssh


def vm_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def timed(cmd, env, cwd, daemon_pid=None):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    d0 = proc_cpu(daemon_pid) if daemon_pid else 0.0
    t0 = time.monotonic()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if daemon_pid:
        cpu += proc_cpu(daemon_pid) - d0
    return wall, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--blob-size", type=int, default=2100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", help="reuse/keep the generated repository in this directory")
    ap.add_argument("--bin-dir", help="use the rgitaly and rgitaly-ssh in this directory instead of building")
    ap.add_argument("--overhead", action="store_true", help="also report rgitaly's own CPU (daemon + rgitaly-ssh)")
    a = ap.parse_args()

    if a.bin_dir:
        bin_dir = os.path.abspath(a.bin_dir)
    else:
        sh("cargo", "build", "--release", "--quiet", "--bin", "rgitaly", "--bin", "rgitaly-ssh", cwd=ROOT)
        bin_dir = os.path.join(ROOT, "target", "release")
    work = tempfile.mkdtemp(prefix="rgitaly-bench-")
    try:
        storage = os.path.join(work, "storage")
        os.makedirs(storage)
        src = os.path.join(storage, "bench.git")
        cached = os.path.join(a.keep, "bench.git") if a.keep else None
        t0 = time.monotonic()
        if cached and os.path.isdir(cached):
            shutil.copytree(cached, src)
            sh("git", "-C", src, "repack", "-a", "-d", "-q", env=git_env())
            count = subprocess.run(["git", "-C", src, "count-objects", "-v"], capture_output=True, text=True).stdout
            info = dict(l.split(": ") for l in count.strip().splitlines())
            objects, pack = int(info["in-pack"]), int(info["size-pack"]) * 1024
        else:
            objects, pack = generate(src, a.objects, a.blob_size)
            if cached:
                os.makedirs(a.keep, exist_ok=True)
                shutil.copytree(src, cached)
        print(f"repository: {objects} objects, pack {pack / 1e6:.1f} MB (prepared in {time.monotonic() - t0:.0f}s)")

        sock = os.path.join(work, "rgitaly.socket")
        cfg = os.path.join(work, "config.toml")
        with open(cfg, "w") as f:
            f.write(f'socket_path = "{sock}"\ninternal_socket_dir = "{work}/internal"\n'
                    f'[[storage]]\nname = "default"\npath = "{storage}"\n[logging]\nlevel = "warn"\n')
        daemon = subprocess.Popen([os.path.join(bin_dir, "rgitaly"), "serve", cfg])
        for _ in range(500):
            if os.path.exists(sock):
                break
            time.sleep(0.02)
        env = git_env()
        env["GIT_SSH_COMMAND"] = os.path.join(bin_dir, "rgitaly-ssh")
        ssh_log = os.path.join(work, "ssh-cpu.log")
        if a.overhead:
            wrapper = os.path.join(work, "rgitaly-ssh-timed")
            with open(wrapper, "w") as f:
                f.write(SSH_WRAPPER.format(python=sys.executable, ssh=env["GIT_SSH_COMMAND"], log=ssh_log))
            os.chmod(wrapper, 0o755)
            env["GIT_SSH_COMMAND"] = wrapper
        own = {"clone": [], "push": []}

        def measured(op, run):
            return (lambda: own[op].append(overhead(daemon.pid, ssh_log, run))) if a.overhead else run
        env["GITALY_ADDRESS"] = "unix:" + sock
        url = "ssh://rgitaly/default/"
        rss_idle = vm_hwm(daemon.pid)

        results = {k: [] for k in ("clone_git", "clone_rgitaly", "push_git", "push_rgitaly")}
        for i in range(a.repeat):
            out = os.path.join(work, "out")
            os.makedirs(out, exist_ok=True)
            clone_git = lambda: results["clone_git"].append(timed(
                ["git", "clone", "--bare", "--no-local", "--quiet", src, f"g{i}.git"], env, out))
            clone_rgitaly = measured("clone", lambda: results["clone_rgitaly"].append(timed(
                ["git", "clone", "--bare", "--quiet", url + "bench.git", f"r{i}.git"], env, out, daemon.pid)))
            for run in ((clone_git, clone_rgitaly) if i % 2 == 0 else (clone_rgitaly, clone_git)):
                os.sync()
                run()
            # Push the clone into fresh empty repositories (in the storage, so the same disk).
            sh("git", "init", "--quiet", "--bare", os.path.join(storage, f"pg{i}.git"), env=env)
            sh("git", "init", "--quiet", "--bare", os.path.join(storage, f"pr{i}.git"), env=env)
            # The local receive-pack gets the checks rgitaly's receive-pack runs with (upstream's
            # receive.fsckObjects), via GIT_CONFIG_PARAMETERS, so both sides do the same server work.
            push_git = lambda: results["push_git"].append(timed(
                ["git", "-c", "receive.fsckObjects=true", "-c", "receive.fsck.badTimezone=ignore",
                 "push", "--quiet", "--mirror", os.path.join(storage, f"pg{i}.git")], env, os.path.join(out, f"g{i}.git")))
            push_rgitaly = measured("push", lambda: results["push_rgitaly"].append(timed(
                ["git", "push", "--quiet", "--mirror", url + f"pr{i}.git"], env, os.path.join(out, f"g{i}.git"),
                daemon.pid)))
            # Each run starts with no dirty pages of the one before (a push writes the whole pack, and its
            # writeback would land in whichever run comes next), and the order alternates.
            for run in ((push_git, push_rgitaly) if i % 2 == 0 else (push_rgitaly, push_git)):
                os.sync()
                run()
            for p in (os.path.join(out, f"g{i}.git"), os.path.join(out, f"r{i}.git"),
                      os.path.join(storage, f"pg{i}.git"), os.path.join(storage, f"pr{i}.git")):
                shutil.rmtree(p)

        peak = vm_hwm(daemon.pid)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)

        def med(k, idx):
            return statistics.median(r[idx] for r in results[k])

        print(f"{'':8} {'git wall':>9} {'rgitaly wall':>13} {'ratio':>6} {'git cpu':>8} {'rgitaly cpu':>12} {'ratio':>6}")
        for op in ("clone", "push"):
            gw, rw = med(op + "_git", 0), med(op + "_rgitaly", 0)
            gc, rc = med(op + "_git", 1), med(op + "_rgitaly", 1)
            print(f"{op:8} {gw:8.2f}s {rw:12.2f}s {rw / gw:6.3f} {gc:7.2f}s {rc:11.2f}s {rc / gc:6.3f}")
        for k, runs in results.items():
            print(f"  {k:14} wall " + " ".join(f"{w:.2f}" for w, _ in runs) + "  cpu " + " ".join(f"{c:.2f}" for _, c in runs))
        for op, runs in own.items():
            if runs:
                print(f"  {op} rgitaly's own cpu (daemon + rgitaly-ssh): median {statistics.median(runs):.3f}s  "
                      + " ".join(f"{c:.3f}" for c in runs))
        print(f"daemon peak RSS: {peak / 2**20:.1f} MiB (idle after start: {rss_idle / 2**20:.1f} MiB); "
              f"pack {pack / 2**20:.0f} MiB; median of {a.repeat}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
