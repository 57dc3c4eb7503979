# The threaded server of the Python socket tutorial over TLS (CPython's ssl
# module):  tls_server.py CERT KEY.  Prints "listening on 127.0.0.1:PORT";
# serves one client per thread until killed.
import socket
import ssl
import sys
import threading

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', 0))
srv.listen(16)
print('listening on 127.0.0.1:%d' % srv.getsockname()[1], flush=True)


def deal_client(conn):
    try:
        c = ctx.wrap_socket(conn, server_side=True)
        c.sendall(b'hello, i am server')
        while True:
            data = c.recv(1024)
            if not data or data == b'exit':
                break
            c.sendall(b'Loop_msg:' + data + b'!')
        c.close()
    except (OSError, ssl.SSLError) as e:
        print('client failed:', e, flush=True)


while True:
    conn, _ = srv.accept()
    threading.Thread(target=deal_client, args=(conn,), daemon=True).start()
