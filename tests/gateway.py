#!/usr/bin/env python3
"""gateway.py: examples/gateway against a real mosquitto broker.

    EXAMPLES=BUILD/examples python3 tests/gateway.py [--tls]

Each broker is a mosquitto started here on a free port with its own config
file in a temporary folder (listener PORT 127.0.0.1, allow_anonymous true,
persistence false); subscribers and publishers are mosquitto_sub and
mosquitto_pub; devices are UDP sockets of this script.  Checks:

  1. datagrams from 20 devices reach mosquitto_sub, in order per device;
  2. mosquitto_pub on PREFIX/down/IP:PORT reaches that device, only it;
  3. the broker stopped (SIGSTOP: publishes sent, not acknowledged), then
     killed (SIGKILL) and restarted mid-stream: nothing lost within the
     queue bound, in order per device, a reconnect counted;
  4. a queue overflow (broker away) drops the oldest and counts it;
  5. SIGTERM exits 0 within 3 s with the final stats line last, with the
     broker up and with the broker away;
  6. a broker that goes silent (SIGSTOP) is given up past the keep-alive
     and reconnected when it answers again, nothing lost.

While a broker is away its port is held by a listener of ours that closes
each connection at once (the gateway backs off as from any dead broker),
so the restarted broker's subscriber is in place before the gateway comes
back (a broker drops messages nobody subscribes to).

With --tls (tests/gateway_tls.sh) every broker listens over TLS with a
certificate for 127.0.0.1 made by tests/tls_certs.sh, mosquitto_sub and
mosquitto_pub verify it (--cafile), the gateway runs with --tls --ca, and
checks 1, 2, 3 and 5 (with the broker up) run again over TLS, with:

  7. an unreadable or non-PEM --ca FILE: a clear message, exit 2;
  8. a --ca that did not sign the broker's certificate, and --tls alone
     (the system's CAs); 9. a broker certificate signed by --ca's CA but
     for another host name: nothing published, the gateway keeps trying with
     its back-off (the broker sees the handshakes; reconnects stays 0, as
     no session is ever established), the reason logged once, SIGTERM
     exits 0 with the stats line last.

Without --tls, --tls is checked to report that TLS is not built when the
build has no TLS (no examples/tls_echo_server), and --ca without --tls to
be a usage error.

Prints TAP-style lines; exit 0 when all pass, 1 otherwise.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

EXAMPLES = os.environ.get("EXAMPLES", os.path.join(os.getcwd(), "examples"))
GATEWAY = os.path.join(EXAMPLES, "gateway")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
STDBUF = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
STATS = re.compile(r"^gateway: up=(\d+) down=(\d+) queued=(\d+) "
                   r"dropped=(\d+) reconnects=(\d+)$")

TMP = tempfile.mkdtemp(prefix="usocket-gateway.")
PROCS = []
FAILED = []
HERE = os.path.dirname(os.path.abspath(__file__))
# TLS built into usocket: its TLS examples are built.
HAVE_TLS = os.access(os.path.join(EXAMPLES, "tls_echo_server"), os.X_OK)
TLS = None  # --tls: the folder of tests/tls_certs.sh's certificates


def cert(name):
    return os.path.join(TLS, name)


def client_tls():
    """mosquitto_sub/mosquitto_pub options: verify the broker."""
    return ["--cafile", cert("ca.pem")] if TLS else []


def ok(name, cond, detail=""):
    name = ("TLS: " if TLS else "") + name
    print(("ok - " if cond else "not ok - ") + name +
          ("" if cond or not detail else ": " + detail))
    if not cond:
        FAILED.append(name)
    sys.stdout.flush()
    return cond


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, limit=5.0):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    PROCS.append(p)
    return p


class Broker:
    """A mosquitto of our own on `port`."""

    def __init__(self, port, name, leaf="server"):
        self.port = port
        self.conf = os.path.join(TMP, name + ".conf")
        with open(self.conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\n"
                    "persistence false\n" % port)
            if TLS:
                f.write("cafile %s\ncertfile %s\nkeyfile %s\n" %
                        (cert("ca.pem"), cert(leaf + ".pem"),
                         cert(leaf + ".key")))
                if os.geteuid() == 0:
                    # Started as root it reads the certificates as user
                    # mosquitto, who cannot enter our mkdtemp folder.
                    f.write("user root\n")
        self.proc = None

    def start(self):
        log = open(self.conf + ".log", "a")
        self.proc = spawn([MOSQUITTO, "-c", self.conf], stdout=log,
                          stderr=log)
        if not wait_port(self.port):
            raise RuntimeError("mosquitto did not start on %d" % self.port)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def connections(self):
        """How many connections it accepted so far, from its log (a TLS
        handshake that fails within the accept is logged differently)."""
        with open(self.conf + ".log") as f:
            log = f.read()
        return (log.count("New connection from") +
                log.count("Client connection from"))


class Sub:
    """mosquitto_sub on PREFIX/up/#; collects (topic, payload) in order."""

    def __init__(self, port, topic="gw/up/#"):
        self.msgs = []
        self.subscribed = threading.Event()
        # stdbuf: mosquitto_sub's stdout is a pipe here, so block-buffered.
        self.proc = spawn(STDBUF + ["mosquitto_sub", "-h", "127.0.0.1", "-p",
                           str(port), "-t", topic, "-q", "1", "-v", "-d"] +
                          client_tls(),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True, bufsize=1)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        if not self.subscribed.wait(5):
            raise RuntimeError("mosquitto_sub did not subscribe")

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("Subscribed (mid"):
                self.subscribed.set()
            elif line.startswith("gw/"):
                topic, _, payload = line.partition(" ")
                self.msgs.append((topic, payload))

    def wait_count(self, n, limit):
        end = time.time() + limit
        while len(self.msgs) < n and time.time() < end:
            time.sleep(0.02)
        return len(self.msgs)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.t.join(5)  # every line it printed is in msgs


class Holder:
    """Holds a broker's port while the broker is away: accepts and closes
    each connection at once, noting when the gateway tried."""

    def __init__(self, port):
        self.s = socket.socket()
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind(("127.0.0.1", port))
        self.s.listen(16)
        self.s.settimeout(0.05)
        self.tries = []
        self.run = True
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while self.run:
            try:
                c, _ = self.s.accept()
                self.tries.append(time.time())
                c.close()
            except OSError:
                pass

    def wait_tries(self, n, limit):
        end = time.time() + limit
        while len(self.tries) < n and time.time() < end:
            time.sleep(0.01)
        return len(self.tries) >= n

    def close(self):
        self.run = False
        self.t.join()
        self.s.close()


class Gateway:
    def __init__(self, udp_port, broker_port, *args, ca="ca.pem"):
        """With --tls: --tls --ca CA (a file of the certificates' folder),
        or --tls alone when ca is None."""
        self.lines = []
        tls = []
        if TLS:
            tls = ["--tls"] + (["--ca", cert(ca)] if ca else [])
        self.proc = spawn([GATEWAY, "--udp", "127.0.0.1:%d" % udp_port,
                           "--broker", "127.0.0.1:%d" % broker_port] +
                          tls + list(args), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, bufsize=1)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def last_stats(self):
        for line in reversed(self.lines):
            m = STATS.match(line)
            if m:
                return [int(x) for x in m.groups()]
        return None

    def wait_stats(self, pred, limit):
        end = time.time() + limit
        while time.time() < end:
            st = self.last_stats()
            if st and pred(st):
                return st
            time.sleep(0.02)
        return self.last_stats()

    def term(self):
        """SIGTERM: (exit code, seconds to exit, final stats or None)."""
        t0 = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        took = time.time() - t0
        self.t.join(2)
        last = self.lines[-1] if self.lines else ""
        m = STATS.match(last)
        return rc, took, [int(x) for x in m.groups()] if m else None, last


def devices(n):
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        out.append(s)
    return out


def topic_of(dev):
    return "gw/up/127.0.0.1:%d" % dev.getsockname()[1]


def per_device(msgs, devs):
    """payloads (ints) per device, in arrival order."""
    by = {topic_of(d): [] for d in devs}
    for topic, payload in msgs:
        if topic in by:
            by[topic].append(int(payload))
    return [by[topic_of(d)] for d in devs]


def first_seen(seq):
    """The sequence with repeats (resends) removed, first arrival kept."""
    seen, out = set(), []
    for x in seq:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def test_up_down_term():
    bport, uport = free_port(), free_port(socket.SOCK_DGRAM)
    broker = Broker(bport, "b1")
    broker.start()
    sub = Sub(bport)
    gw = Gateway(uport, bport, "--stats", "0.2")
    ok("gateway runs", gw.wait_stats(lambda st: True, 5) is not None)
    devs = devices(20)
    # Paced by the sanitizer builds' multiplier: under ASan the gateway reads
    # slower than 20 datagrams per 2 ms and the kernel drops UDP past the
    # socket buffer (not the gateway's queue: that loses nothing).
    mult = float(os.environ.get("USOCK_TEST_TIMEOUT_MULTIPLIER", "1") or 1)
    for k in range(50):
        for d in devs:
            d.sendto(b"%d" % k, ("127.0.0.1", uport))
        time.sleep(0.002 * mult)
    sub.wait_count(1000, 15 * mult)
    got = per_device(sub.msgs, devs)
    ok("20 devices x 50 datagrams reach mosquitto_sub in order per device",
       all(g == list(range(50)) for g in got),
       "counts %s" % [len(g) for g in got])

    # Down: to three devices, each gets only its own.
    for d in devs:
        d.setblocking(False)
    for i in (0, 7, 19):
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(bport),
                        "-t", "gw/down/127.0.0.1:%d" % devs[i].getsockname()[1],
                        "-m", "to device %d" % i] + client_tls(), timeout=10,
                       check=False)
    got = {}
    end = time.time() + 5
    while len(got) < 3 and time.time() < end:
        for i, d in enumerate(devs):
            try:
                data = d.recv(100)
                got.setdefault(i, []).append(data)
            except BlockingIOError:
                pass
        time.sleep(0.01)
    time.sleep(0.2)
    for i, d in enumerate(devs):
        try:
            data = d.recv(100)
            got.setdefault(i, []).append(data)
        except BlockingIOError:
            pass
    ok("mosquitto_pub on gw/down/IP:PORT reaches that device only",
       got == {0: [b"to device 0"], 7: [b"to device 7"],
               19: [b"to device 19"]}, repr(got))

    # SIGTERM with the broker up: what is queued goes out first.
    for k in range(50, 60):
        devs[0].sendto(b"%d" % k, ("127.0.0.1", uport))
    time.sleep(0.1)
    rc, took, st, last = gw.term()
    ok("SIGTERM: exit 0 within 3 s", rc == 0 and took < 3,
       "rc %d after %.2f s" % (rc, took))
    ok("SIGTERM: the stats line is the last output, everything published",
       st is not None and st == [1010, 3, 0, 0, 0], repr(last))
    sub.wait_count(1010, 5)
    ok("the last datagrams reached mosquitto_sub",
       per_device(sub.msgs, devs[:1])[0] == list(range(60)))
    sub.stop()
    broker.kill()


def test_restart():
    bport, uport = free_port(), free_port(socket.SOCK_DGRAM)
    broker = Broker(bport, "b2")
    broker.start()
    sub = Sub(bport)
    gw = Gateway(uport, bport, "--stats", "0.2", "-q")
    gw.wait_stats(lambda st: True, 5)
    devs = devices(4)
    n = 150
    killed = threading.Event()

    # Mid-stream: after round 40 the broker stops (SIGSTOP: it reads and
    # acknowledges nothing more, so the next publishes are sent and not
    # acknowledged), and after round 60 it is killed (SIGKILL).  The short
    # pause before the stop lets it hand everything it had acknowledged to
    # the subscriber: what a killed broker had acknowledged and not yet
    # delivered is the broker's loss, not the gateway's.
    def stream():
        for k in range(n):
            if k == 40:
                time.sleep(0.3)
                broker.proc.send_signal(signal.SIGSTOP)
            if k == 60:
                broker.kill()
                killed.set()
            for d in devs:
                d.sendto(b"%d" % k, ("127.0.0.1", uport))
            time.sleep(0.015)

    t = threading.Thread(target=stream)
    t.start()
    killed.wait(10)
    holder = Holder(bport)  # the broker is away; the gateway backs off
    time.sleep(0.3)         # the subscriber prints what it had received
    sub.stop()
    old = list(sub.msgs)
    # After its 4th try the gateway waits 1.6 s: time to bring the broker
    # and a subscriber back before it returns.
    ok("the gateway keeps trying with a back-off", holder.wait_tries(4, 5),
       "%d tries" % len(holder.tries))
    tries = holder.tries[:]
    holder.close()
    broker.start()
    sub2 = Sub(bport)
    t.join()
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    ok("back-off doubles from 100 ms",
       len(gaps) >= 3 and 0.08 < gaps[0] < 0.5 and gaps[2] > 1.5 * gaps[1]
       and gaps[1] > 1.5 * gaps[0], "gaps %s" % ["%.3f" % g for g in gaps])
    want = len(devs) * n
    end = time.time() + 15
    while time.time() < end:
        got = [first_seen(a) for a in per_device(old + sub2.msgs, devs)]
        if sum(len(g) for g in got) >= want:
            break
        time.sleep(0.05)
    got = [first_seen(a) for a in per_device(old + sub2.msgs, devs)]
    ok("broker killed and restarted mid-stream: nothing lost, in order",
       all(g == list(range(n)) for g in got),
       "per device %s" % [len(g) for g in got])
    st = gw.wait_stats(lambda st: st[2] == 0, 5)
    ok("a reconnect is counted, nothing dropped",
       st is not None and st[4] == 1 and st[3] == 0, repr(st))
    rc, took, st, last = gw.term()
    ok("after the restart: SIGTERM exits 0 within 3 s",
       rc == 0 and took < 3 and st is not None, "rc %d %.2f s %r" %
       (rc, took, last))
    sub2.stop()
    broker.kill()


def test_silent_broker():
    """A broker that goes silent (SIGSTOP) is given up past the keep-alive
    (10 s, pinged every 5 s, 15 s without a byte), and the gateway comes
    back when it answers again (SIGCONT)."""
    bport, uport = free_port(), free_port(socket.SOCK_DGRAM)
    broker = Broker(bport, "b4")
    broker.start()
    sub = Sub(bport)
    gw = Gateway(uport, bport, "--stats", "0.2", "-q")
    gw.wait_stats(lambda st: True, 5)
    dev = devices(1)[0]
    for k in range(5):
        dev.sendto(b"%d" % k, ("127.0.0.1", uport))
    gw.wait_stats(lambda st: st[0] == 5, 5)
    broker.proc.send_signal(signal.SIGSTOP)
    for k in range(5, 10):
        dev.sendto(b"%d" % k, ("127.0.0.1", uport))
    time.sleep(16.5)  # past the 15 s of silence the gateway tolerates
    broker.proc.send_signal(signal.SIGCONT)
    st = gw.wait_stats(lambda st: st[0] >= 10 and st[4] >= 1, 15)
    ok("a silent broker is given up past the keep-alive, then reconnected",
       st is not None and st[4] >= 1 and st[0] >= 10, repr(st))
    sub.wait_count(10, 5)
    got = first_seen(per_device(sub.msgs, [dev])[0])
    ok("nothing lost across the silence, in order", got == list(range(10)),
       repr(got))
    rc, took, st, last = gw.term()
    ok("after the silence: SIGTERM exits 0", rc == 0 and st is not None,
       repr(last))
    sub.stop()
    broker.kill()


def test_overflow_and_term_without_broker():
    bport, uport = free_port(), free_port(socket.SOCK_DGRAM)
    holder = Holder(bport)  # no broker yet
    gw = Gateway(uport, bport, "--stats", "0.1", "--queue", "20", "-q")
    gw.wait_stats(lambda st: True, 5)  # its UDP socket is bound
    dev = devices(1)[0]
    for k in range(30):
        dev.sendto(b"%d" % k, ("127.0.0.1", uport))
        time.sleep(0.005)
    st = gw.wait_stats(lambda st: st[3] == 10, 5)
    ok("queue overflow: 30 datagrams, queue 20: 10 dropped, 20 queued",
       st is not None and st[2] == 20 and st[3] == 10, repr(st))
    holder.wait_tries(4, 5)
    holder.close()
    broker = Broker(bport, "b3")
    broker.start()
    sub = Sub(bport)
    sub.wait_count(20, 10)
    got = per_device(sub.msgs, [dev])[0]
    ok("the oldest were dropped: 10..29 arrive, in order",
       got == list(range(10, 30)), repr(got))
    rc, took, st, last = gw.term()
    ok("overflow: SIGTERM exits 0 with up=20 dropped=10",
       rc == 0 and st is not None and st[0] == 20 and st[3] == 10,
       repr(last))
    sub.stop()
    broker.kill()

    # The broker away at SIGTERM: 2 s of trying, then exit 0.
    bport = free_port()
    holder = Holder(bport)
    gw = Gateway(uport, bport, "--stats", "0.1", "-q")
    gw.wait_stats(lambda st: True, 5)
    for k in range(5):
        dev.sendto(b"%d" % k, ("127.0.0.1", uport))
    gw.wait_stats(lambda st: st[2] == 5, 5)
    rc, took, st, last = gw.term()
    ok("broker away: SIGTERM exits 0 within 3 s with queued=5 last",
       rc == 0 and took < 3 and st is not None and st[2] == 5,
       "rc %d %.2f s %r" % (rc, took, last))
    holder.close()


def test_cli():
    r = subprocess.run([GATEWAY, "--help"], capture_output=True, text=True,
                       timeout=10)
    ok("--help documents every option and the stats line",
       r.returncode == 0 and all(o in r.stdout for o in (
           "--udp", "--broker", "--topic", "--queue", "--client-id",
           "--tls", "--ca", "--stats", "-q",
           "gateway: up=N down=N queued=N dropped=N reconnects=N")))
    base = [GATEWAY, "--udp", "127.0.0.1:%d" % free_port(socket.SOCK_DGRAM),
            "--broker", "127.0.0.1:1883"]
    if HAVE_TLS:
        print("ok - --tls without TLS built reports it # SKIP TLS is built "
              "(tests/gateway_tls.sh tests --tls)")
    else:
        r = subprocess.run(base + ["--tls", "--ca", "/nonexistent"],
                           capture_output=True, text=True, timeout=10)
        ok("--tls --ca FILE reports that TLS is not built, exit 1",
           r.returncode == 1 and "TLS is not built" in r.stderr, r.stderr)
    r = subprocess.run(base + ["--ca", "/nonexistent"], capture_output=True,
                       text=True, timeout=10)
    ok("--ca without --tls is a usage error", r.returncode == 2)
    r = subprocess.run([GATEWAY, "--udp", "127.0.0.1:1"], capture_output=True,
                       text=True, timeout=10)
    ok("a missing --broker is a usage error", r.returncode == 2)


def test_cli_tls():
    base = [GATEWAY, "--udp", "127.0.0.1:%d" % free_port(socket.SOCK_DGRAM),
            "--broker", "127.0.0.1:1883", "--tls", "--ca"]
    r = subprocess.run(base + ["/nonexistent/ca.pem"], capture_output=True,
                       text=True, timeout=10)
    ok("--ca FILE that does not exist: its name and why, exit 2",
       r.returncode == 2 and "/nonexistent/ca.pem: No such file" in r.stderr,
       "rc %d %r" % (r.returncode, r.stderr))
    junk = os.path.join(TMP, "junk.pem")
    with open(junk, "w") as f:
        f.write("not a certificate\n")
    r = subprocess.run(base + [junk], capture_output=True, text=True,
                       timeout=10)
    ok("--ca FILE that holds no PEM certificate: said, exit 2",
       r.returncode == 2 and "no PEM certificate" in r.stderr,
       "rc %d %r" % (r.returncode, r.stderr))


def test_unknown_ca():
    """A CA that did not sign the broker's certificate (--ca other.pem), and
    --tls alone (the system's CAs, which do not hold the test CA): no
    session, the handshake retried with the back-off, nothing published."""
    bport = free_port()
    broker = Broker(bport, "b5")
    broker.start()
    sub = Sub(bport)
    before = broker.connections()  # wait_port's and the subscriber's
    gws = []
    for ca in ("other.pem", None):
        uport = free_port(socket.SOCK_DGRAM)
        gw = Gateway(uport, bport, "--stats", "0.2", ca=ca)
        gw.wait_stats(lambda st: True, 5)
        dev = devices(1)[0]
        for k in range(5):
            dev.sendto(b"%d" % k, ("127.0.0.1", uport))
        gws.append((gw, "--ca other.pem" if ca else "--tls alone"))
    # Tries at 0, 0.1, 0.3, 0.7, 1.5 s: at least 4 each within 2.5 s.
    end = time.time() + 5
    while broker.connections() - before < 8 and time.time() < end:
        time.sleep(0.05)
    time.sleep(0.3)
    tries = broker.connections() - before
    ok("unknown CA: the gateways keep retrying the handshake",
       tries >= 8, "%d connections seen by the broker" % tries)
    for gw, what in gws:
        st = gw.wait_stats(lambda st: st[2] == 5, 2)
        ok(what + ": nothing published, 5 queued, no session (reconnects 0)",
           st == [0, 0, 5, 0, 0], repr(st))
        why = [l for l in gw.lines if "unreachable" in l]
        ok(what + ": the reason logged once",
           len(why) == 1 and "TLS handshake" in why[0] and
           "certificate verify failed" in why[0], repr(why))
        rc, took, st, last = gw.term()
        ok(what + ": SIGTERM exits 0 within 3 s, the stats line last",
           rc == 0 and took < 3 and st is not None and st[2] == 5,
           "rc %d %.2f s %r" % (rc, took, last))
    time.sleep(0.2)
    ok("unknown CA: mosquitto_sub got nothing", sub.msgs == [],
       repr(sub.msgs[:3]))
    sub.stop()
    broker.kill()


def test_wrong_host():
    """A broker whose certificate, signed by the gateway's --ca, names
    another host (elsewhere.example, not 127.0.0.1): verification fails on
    the name, no session, nothing published, the reason logged once."""
    bport = free_port()
    broker = Broker(bport, "b6", leaf="wronghost")
    broker.start()
    before = broker.connections()
    uport = free_port(socket.SOCK_DGRAM)
    gw = Gateway(uport, bport, "--stats", "0.2", ca="ca.pem")
    gw.wait_stats(lambda st: True, 5)
    dev = devices(1)[0]
    for k in range(3):
        dev.sendto(b"%d" % k, ("127.0.0.1", uport))
    end = time.time() + 5
    while broker.connections() - before < 3 and time.time() < end:
        time.sleep(0.05)
    tries = broker.connections() - before
    ok("wrong host name: the gateway keeps retrying the handshake",
       tries >= 3, "%d connections seen by the broker" % tries)
    st = gw.wait_stats(lambda st: st[2] == 3, 2)
    ok("wrong host name: nothing published, 3 queued, no session",
       st == [0, 0, 3, 0, 0], repr(st))
    why = [l for l in gw.lines if "unreachable" in l]
    ok("wrong host name: the reason logged once",
       len(why) == 1 and "TLS handshake" in why[0] and
       "certificate verify failed" in why[0], repr(why))
    rc, took, st, last = gw.term()
    ok("wrong host name: SIGTERM exits 0 within 3 s, the stats line last",
       rc == 0 and took < 3 and st is not None and st[2] == 3,
       "rc %d %.2f s %r" % (rc, took, last))
    broker.kill()


def make_certs():
    global TLS
    d = os.path.join(TMP, "certs")
    os.mkdir(d)
    r = subprocess.run(["sh", os.path.join(HERE, "tls_certs.sh"), d],
                       timeout=60)
    if r.returncode != 0:
        with open(os.path.join(d, "certs.log")) as f:
            raise RuntimeError("tests/tls_certs.sh failed: " + f.read())
    TLS = d


def main():
    try:
        if "--tls" in sys.argv[1:]:
            make_certs()
            test_cli_tls()
            test_up_down_term()
            test_restart()
            test_unknown_ca()
            test_wrong_host()
        else:
            test_cli()
            test_up_down_term()
            test_restart()
            test_overflow_and_term_without_broker()
            test_silent_broker()
    except Exception as e:  # a setup failure fails the test
        ok("setup", False, repr(e))
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(TMP, ignore_errors=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
