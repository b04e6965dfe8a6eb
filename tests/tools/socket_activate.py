#!/usr/bin/env python3
"""A stand-in for systemd's socket activation, for tests (systemd is not PID 1 there).

    socket_activate.py --listen NAME=HOST:PORT [--listen ...] -- COMMAND [ARGS...]

Binds the sockets and holds them, as systemd holds a .socket unit's, for as long as it runs.
Starts COMMAND with them as fds 3, 4, ... and LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID and
NOTIFY_SOCKET set, as systemd does for `Type=notify` with `Sockets=`, and waits for READY=1.
Commands on stdin, one per line:
    restart   what `systemctl restart` does: SIGTERM, wait for the exit, start again
    stop      SIGTERM, wait for the exit, and quit (also on end of input)
On stdout it prints `activator: ready PID` each time a started process says READY=1, and
`activator: exited PID STATUS` each time one exits.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile

READY_TIMEOUT = 30
STOP_TIMEOUT = 60


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", action="append", required=True)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    return args


def listen(specs):
    """Binds each NAME=HOST:PORT and moves the sockets to fds 3, 4, ... of this process."""
    names, sockets = [], []
    for spec in specs:
        name, addr = spec.split("=", 1)
        host, port = addr.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(4096)
        names.append(name)
        sockets.append(s)
    # Park them high first, so that moving them to 3.. cannot overwrite one another.
    parked = [os.dup2(s.fileno(), 100 + i) for i, s in enumerate(sockets)]
    for s in sockets:
        s.close()
    for i, fd in enumerate(parked):
        os.dup2(fd, 3 + i)
        os.close(fd)
    return names


def start(command, names, notify_path):
    env = dict(os.environ)
    env["LISTEN_FDS"] = str(len(names))
    env["LISTEN_FDNAMES"] = ":".join(names)
    env["NOTIFY_SOCKET"] = notify_path
    # LISTEN_PID must be the service's own PID: sh learns it, then becomes the service.
    wrapped = ["sh", "-c", 'export LISTEN_PID=$$; exec "$0" "$@"'] + command
    fds = list(range(3, 3 + len(names)))
    return subprocess.Popen(wrapped, env=env, pass_fds=fds, stdout=sys.stderr)


def wait_ready(notify, child):
    notify.settimeout(READY_TIMEOUT)
    while True:
        try:
            message = notify.recv(4096).decode(errors="replace")
        except socket.timeout:
            sys.exit(f"activator: process {child.pid} sent no READY=1 in {READY_TIMEOUT}s")
        if "READY=1" in message.split("\n"):
            print(f"activator: ready {child.pid}", flush=True)
            return


def stop(child):
    child.send_signal(signal.SIGTERM)
    status = child.wait(timeout=STOP_TIMEOUT)
    print(f"activator: exited {child.pid} {status}", flush=True)


def main():
    args = parse()
    names = listen(args.listen)
    workdir = tempfile.mkdtemp(prefix="activator-")
    notify_path = os.path.join(workdir, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    child = start(args.command, names, notify_path)
    wait_ready(notify, child)
    for line in sys.stdin:
        command = line.strip()
        if command == "restart":
            stop(child)
            child = start(args.command, names, notify_path)
            wait_ready(notify, child)
        elif command == "stop":
            break
    stop(child)


if __name__ == "__main__":
    main()
