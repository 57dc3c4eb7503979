#!/usr/bin/env python3
"""chat_clients.py PORT NC: drive examples/chat_server with CPython clients
and one nc process.

  - alice, bob and carol are ordinary clients;
  - dave connects with a tiny receive buffer and never reads: the server
    must drop him once his queue is full, without holding up the others;
  - an nc client is killed (SIGKILL) while lines are streaming to it.

alice floods FLOOD lines; bob and carol must get every one, in order,
within a time bound; after nc's death the server must keep serving, and a
newcomer must be able to join and chat.  Prints "ok - ..." lines and one
"not ok - ..." per failure; exit 1 when something failed.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

FLOOD = 5000
LIMIT = 20.0  # seconds for the whole flood to reach bob and carol

port = int(sys.argv[1])
nc = sys.argv[2] if len(sys.argv) > 2 else "nc"
failed = False


def report(ok, what):
    global failed
    print(("ok - " if ok else "not ok - ") + what, flush=True)
    if not ok:
        failed = True


class Client:
    def __init__(self, name, rcvbuf=None):
        self.name = name
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(10)
        self.s.connect(("127.0.0.1", port))
        self.buf = b""

    def say(self, text):
        self.s.sendall(text.encode() + b"\n")

    def line(self):
        """One line ("" at end of stream).  Our own buffer, not makefile():
        a timeout leaves a socket file's buffer in an undefined state."""
        while b"\n" not in self.buf:
            b = self.s.recv(65536)
            if not b:
                return ""
            self.buf += b
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln.decode() + "\n"

    def expect(self, pred, limit=10.0):
        """Read lines until pred(line) holds; the line, or None."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            self.s.settimeout(max(0.01, end - time.monotonic()))
            try:
                ln = self.line()
            except (socket.timeout, OSError):
                return None
            if ln == "":
                return None
            if pred(ln):
                return ln
        return None


alice = Client("alice")
bob = Client("bob")
carol = Client("carol")
time.sleep(0.2)

# A plain exchange first: bob speaks, alice and carol hear it.
bob.say("hi all")
got_a = alice.expect(lambda ln: ln.endswith("] hi all\n"))
got_c = carol.expect(lambda ln: ln.endswith("] hi all\n"))
report(got_a is not None and got_c is not None, "chat: a line reaches the others")
got_b = bob.expect(lambda ln: "hi all" in ln, 0.3)
report(got_b is None, "chat: a sender does not hear itself")

# dave never reads, with a receive buffer of 2 KiB.
dave = Client("dave", rcvbuf=2048)
# nc reads whatever comes, until killed.
ncp = subprocess.Popen([nc, "127.0.0.1", str(port)], stdin=subprocess.PIPE,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.3)

# The flood: alice sends FLOOD lines; nc is killed halfway.  bob and carol
# read at the same time, each in a thread of its own.
ok = {"bob": 0, "carol": 0}


def read_flood(c):
    want = 0
    end = start + LIMIT
    while want < FLOOD and time.monotonic() < end:
        ln = c.expect(lambda ln: "] line " in ln, end - time.monotonic())
        if ln is None:
            print("# %s: no line %d" % (c.name, want), flush=True)
            break
        n = int(ln.split("] line ")[1].split()[0])
        if n != want:
            print("# %s: line %d instead of %d" % (c.name, n, want), flush=True)
            break
        want += 1
    ok[c.name] = want


start = time.monotonic()
readers = [threading.Thread(target=read_flood, args=(c,)) for c in (bob, carol)]
for t in readers:
    t.start()
pad = "x" * 60
for i in range(FLOOD):
    alice.say("line %d %s" % (i, pad))
    if i == FLOOD // 2:
        ncp.send_signal(signal.SIGKILL)

for t in readers:
    t.join(LIMIT + 5)
took = time.monotonic() - start
report(ok["bob"] == FLOOD and ok["carol"] == FLOOD,
       "chat: bob and carol get all %d lines in order (%d, %d) in %.2f s"
       % (FLOOD, ok["bob"], ok["carol"], took))
ncp.wait()

# dave was dropped: after draining what the kernel holds he sees the end.
dave.s.settimeout(10)
end = time.monotonic() + 10
eof = False
total = 0
try:
    while time.monotonic() < end:
        b = dave.s.recv(65536)
        if not b:
            eof = True
            break
        total += len(b)
except ConnectionResetError:
    eof = True
except socket.timeout:
    pass
report(eof and total < FLOOD * 60, "chat: the client that never reads is dropped "
       "(got %d bytes, then end of stream)" % total)

# The server still serves: a newcomer joins and talks with bob.
erin = Client("erin")
time.sleep(0.2)
erin.say("still there?")
got = bob.expect(lambda ln: ln.endswith("] still there?\n"))
report(got is not None, "chat: the server serves on after a killed and a dropped client")
carol.say("yes")
got = erin.expect(lambda ln: ln.endswith("] yes\n"))
report(got is not None, "chat: the newcomer hears the others")

# A client leaving is announced.
carol.s.close()
got = bob.expect(lambda ln: ln.startswith("* ") and ln.endswith(" left\n"))
report(got is not None, "chat: a client leaving is announced")

for c in (alice, bob, erin, dave):
    c.s.close()
sys.exit(1 if failed else 0)
