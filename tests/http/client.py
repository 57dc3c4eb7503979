"""CPython's http.client and raw sockets against examples/http_server.

    python3 client.py PORT ROOT TIMEOUT

ROOT is the folder the server serves (made by tests/http.sh: f1k.txt,
index.html, style.css, sub/a.txt, a symlink inside and two out of it);
TIMEOUT is the server's -t.  One TAP-style line per check ("ok - ..." or
"not ok - ..."); the exit status is 1 when a check failed.
"""
import http.client
import os
import socket
import sys
import time

PORT = int(sys.argv[1])
ROOT = sys.argv[2]
TIMEOUT = float(sys.argv[3])
# Upper time bounds widen under sanitizers and valgrind, as in the suites.
MULT = float(os.environ.get("USOCK_TEST_TIMEOUT_MULTIPLIER", "1") or 1)
failed = False


def check(name, cond, detail=""):
    global failed
    if cond:
        print("ok - " + name)
    else:
        failed = True
        print("not ok - " + name)
        if detail:
            for line in str(detail).splitlines()[:20]:
                print("#   " + line)


def content(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


def raw(data, wait=5.0):
    """Sends data on a new connection, then reads until the server closes
    (or `wait` seconds pass).  Returns the bytes read."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=wait)
    out = b""
    try:
        s.sendall(data)
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (socket.timeout, ConnectionResetError):
        pass
    finally:
        s.close()
    return out


def status(resp):
    line = resp.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def responses(data):
    """Splits a byte string into (status, headers dict, body) tuples."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        hdrs = {}
        for h in lines[1:]:
            k, _, v = h.partition(b":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get(b"content-length", b"0"))
        out.append((status(head), hdrs, rest[:n]))
        data = rest[n:]
    return out


# ---- http.client: keep-alive, HEAD, types ----------------------------------
c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
bodies = []
socks = []
for path in ("/f1k.txt", "/index.html", "/style.css", "/sub/a.txt"):
    c.request("GET", path)
    r = c.getresponse()
    bodies.append((path, r.status, r.getheader("Content-Type"), r.read()))
    socks.append(c.sock)
check("http.client: four GETs on one kept-alive connection",
      all(s is socks[0] and s is not None for s in socks), socks)
check("http.client: bodies are the files",
      all(st == 200 and b == content(p.lstrip("/")) for p, st, _, b in bodies),
      [(p, st, len(b)) for p, st, _, b in bodies])
types = {p: t for p, _, t, _ in bodies}
check("http.client: Content-Type from the extension",
      types["/f1k.txt"].startswith("text/plain") and
      types["/index.html"].startswith("text/html") and
      types["/style.css"] == "text/css", types)
c.request("HEAD", "/f1k.txt")
r = c.getresponse()
body = r.read()
check("http.client: HEAD gives the length, no body",
      r.status == 200 and r.getheader("Content-Length") == "1024" and
      body == b"", (r.status, r.getheader("Content-Length"), body[:40]))
c.request("GET", "/missing.txt")
r = c.getresponse()
r.read()
check("http.client: 404, connection kept", r.status == 404 and
      c.sock is socks[0], r.status)
c.request("GET", "/", headers={"Connection": "close"})
r = c.getresponse()
body = r.read()
check("http.client: / is index.html; Connection: close honoured",
      r.status == 200 and body == content("index.html") and
      (r.getheader("Connection") or "").lower() == "close" and r.will_close,
      (r.status, r.getheader("Connection")))
c.close()

# ---- pipelining -------------------------------------------------------------
req = b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p
               for p in (b"/f1k.txt", b"/nope", b"/sub/a.txt"))
req += b"HEAD /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
rs = responses(raw(req))
check("pipelining: four requests in one write, four answers in order",
      [x[0] for x in rs] == [200, 404, 200, 200] and
      rs[0][2] == content("f1k.txt") and rs[2][2] == content("sub/a.txt") and
      rs[3][2] == b"" and rs[3][1].get(b"content-length") ==
      str(len(content("index.html"))).encode(),
      [(x[0], len(x[2])) for x in rs])

# HTTP/1.0: closed unless asked to keep alive.
out = raw(b"GET /f1k.txt HTTP/1.0\r\n\r\n")
rs = responses(out)
check("HTTP/1.0 without keep-alive: one answer, then close",
      len(rs) == 1 and rs[0][0] == 200 and rs[0][2] == content("f1k.txt"),
      out[:200])
out = raw(b"GET /f1k.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
          b"GET /sub/a.txt HTTP/1.0\r\n\r\n")
rs = responses(out)
check("HTTP/1.0 keep-alive: two answers on one connection",
      [x[0] for x in rs] == [200, 200] and
      rs[0][1].get(b"connection", b"").lower() == b"keep-alive", out[:300])

# ---- malformed requests -----------------------------------------------------
cases = [
    ("garbage request line", b"GARBAGE\r\n\r\n", 400),
    ("request line without version", b"GET /\r\n\r\n", 400),
    ("bad version", b"GET / HTTP/9.9\r\nHost: t\r\n\r\n", 400),
    ("header without colon", b"GET / HTTP/1.1\r\nHost: t\r\nBad\r\n\r\n", 400),
    ("folded header", b"GET / HTTP/1.1\r\nHost: t\r\n x: y\r\n\r\n", 400),
    ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("bad Content-Length",
     b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", 400),
    ("bad percent escape", b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("encoded NUL", b"GET /f1k.txt%00 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("POST gets 405",
     b"POST /f1k.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
     b"Connection: close\r\n\r\nabc", 405),
    ("DELETE gets 405",
     b"DELETE /f1k.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 405),
    ("request line over 8 KiB",
     b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    ("headers over 16 KiB",
     b"GET / HTTP/1.1\r\nHost: t\r\n" +
     b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(20)) +
     b"\r\n", 431),
    ("one header line over 16 KiB",
     b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"p" * 20000 + b"\r\n\r\n", 431),
]
for name, data, want in cases:
    out = raw(data)
    got = status(out)
    check("malformed: %s -> %d" % (name, want), got == want, out[:200])
    if want == 405:
        check("malformed: %s has Allow: GET, HEAD" % name,
              b"\r\nAllow: GET, HEAD\r\n" in out, out[:300])

# A request line of exactly 8 KiB (a long query) is still served.
out = raw(b"GET /f1k.txt?" + b"a" * (8192 - len("GET /f1k.txt? HTTP/1.1")) +
          b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
check("a request line of exactly 8 KiB is served", status(out) == 200 and
      out.endswith(content("f1k.txt")), out[:100])

# ---- paths that escape ROOT -------------------------------------------------
escapes = [b"/../etc/passwd", b"/%2e%2e/%2e%2e/etc/passwd",
           b"/%2E%2E%2Fetc%2Fpasswd", b"/sub/../../etc/passwd",
           b"/sub/%2e%2e/%2e%2e/etc/passwd", b"/..", b"/./f1k.txt",
           b"/out/secret.txt", b"/outfile.txt", b"/out"]
for p in escapes:
    out = raw(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % p)
    check("escape %s -> 403 or 404" % p.decode(),
          status(out) in (403, 404) and b"SECRET" not in out, out[:200])
out = raw(b"GET /inlink.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
check("a symlink inside ROOT is served",
      status(out) == 200 and out.endswith(content("f1k.txt")), out[:200])

# ---- slowloris --------------------------------------------------------------
s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
start = time.monotonic()
s.sendall(b"GET /f1k.txt HTTP/1.1\r\nHost: t\r\nX-Slow: ")
got = b""
closed_at = None
try:
    while time.monotonic() - start < (TIMEOUT * 5 + 2) * MULT:
        try:
            s.sendall(b"a")
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic()
            break
        s.settimeout(0.2)
        try:
            b = s.recv(4096)
            if not b:
                closed_at = time.monotonic()
                break
            got += b
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed_at = time.monotonic()
            break
finally:
    s.close()
took = (closed_at or time.monotonic()) - start
check("slowloris (a header byte every 0.2 s) cut off after the %.1f s "
      "request timeout (took %.2f s)" % (TIMEOUT, took),
      closed_at is not None and TIMEOUT * 0.9 <= took <= (TIMEOUT * 3 + 1) * MULT,
      got[:200])
check("slowloris gets 408", status(got) == 408, got[:200])

# An idle keep-alive connection is closed after the timeout too.
s = socket.create_connection(("127.0.0.1", PORT),
                             timeout=(TIMEOUT * 5 + 2) * MULT)
start = time.monotonic()
try:
    b = s.recv(100)
except (socket.timeout, ConnectionResetError):
    b = None
took = time.monotonic() - start
s.close()
check("an idle connection is closed after the timeout (took %.2f s)" % took,
      b == b"" and TIMEOUT * 0.9 <= took <= (TIMEOUT * 3 + 1) * MULT, b)

# The server still answers.
c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
c.request("GET", "/f1k.txt")
r = c.getresponse()
check("still serving afterwards", r.status == 200 and
      r.read() == content("f1k.txt"), r.status)
c.close()
sys.exit(1 if failed else 0)
