#!/usr/bin/env python3
"""Runs a command and reports the CPU time it and a watched process tree used meanwhile.

    cpu_run.py OUT.json [--tree PID] [--pid PID] -- COMMAND [ARGS...]

Writes {"client_cpu_s": ..., "tree_cpu_s": ..., "pid_cpu_s": ..., "wall_s": ...} to OUT.json:
the command's own CPU (user + system, children included), the CPU of PID --tree and its
direct children, live or exited (a PostgreSQL postmaster and its backends), and of PID --pid
(a server).
The command's stdout and stderr pass through; its exit status is ours.

Why: on a machine other work shares, ops/s of two systems measured one after the other move
with the neighbours' load, CPU per operation much less (see benches/README.md).
"""
import json, os, resource, subprocess, sys, time

TICKS = os.sysconf("SC_CLK_TCK")


def stat(pid):
    """(parent pid, own user + system ticks, reaped children's user + system ticks)"""
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    return int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


def tree(root):
    # The root's reaped children count too: pgbench's backends exit when it disconnects, at the
    # end of the window, and their time then moves to the postmaster's cutime/cstime (it waits
    # for them). Without it most of a pgbench run's database CPU was missing.
    ticks = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            st = stat(p)
            if st and int(p) == root:
                ticks += st[1] + st[2]
            elif st and st[0] == root:
                ticks += st[1]
    return ticks / TICKS


def one(pid):
    st = stat(pid)
    return st[1] / TICKS if st else None


def main():
    args = sys.argv[1:]
    out = args.pop(0)
    tree_pid = pid = None
    while args and args[0] != "--":
        flag, val = args.pop(0), int(args.pop(0))
        if flag == "--tree":
            tree_pid = val
        elif flag == "--pid":
            pid = val
        else:
            sys.exit(f"cpu_run.py: unknown option {flag}")
    cmd = args[1:]
    t0 = tree(tree_pid) if tree_pid else None
    p0 = one(pid) if pid else None
    w0 = time.monotonic()
    rc = subprocess.call(cmd)
    wall = time.monotonic() - w0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = {
        "client_cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
        "tree_cpu_s": round(tree(tree_pid) - t0, 3) if tree_pid else None,
        "pid_cpu_s": round(one(pid) - p0, 3) if pid and p0 is not None and one(pid) is not None else None,
        "wall_s": round(wall, 3),
    }
    with open(out, "w") as f:
        json.dump(res, f)
    sys.exit(rc)


if __name__ == "__main__":
    main()
