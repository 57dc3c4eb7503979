# The TCP client of the Python socket tutorial over TLS (CPython's ssl
# module, the SSLContext.wrap_socket form):  tls_client.py PORT CAFILE
import socket
import ssl
import sys

port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
raw = socket.create_connection(('127.0.0.1', port), timeout=10)
s = ctx.wrap_socket(raw, server_hostname='localhost')


def recv_exact(n):
    data = b''
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data.decode('utf-8')


print('-->>', recv_exact(len('hello, i am server')))
msg = b'Hello,i am a client'
s.sendall(msg)
print('-->>' + recv_exact(len('Loop_msg:') + len(msg) + 1))
s.sendall(b'exit')
s.close()
