# coding:utf-8
# The threaded TCP server of the Python socket tutorial (usocket seed 004),
# without its time.sleep(1), with the port from the command line:
#
#     tcp_server.py PORT      (0 picks a free port)
#
# It prints "listening on 127.0.0.1:PORT" (the port it bound) before the
# tutorial's "wating for conn...".  Stop it with SIGTERM.
import socket
import sys
import threading


def dealClient(sock, addr):
    # 接收传来的数据,并发送给对方数据。
    print('Accpet new conn from %s:%s' % addr, flush=True)
    sock.send(b'hello, i am server')
    while True:
        data = sock.recv(1024)
        if not data or data.decode('utf-8') == 'exit':
            break
        print('%s!' % data.decode('utf-8'), flush=True)
        sock.send(('Loop_msg:%s!' % data.decode('utf-8')).encode('utf-8'))
    # 关闭socket
    sock.close()
    print('conn from %s:%s close.' % addr, flush=True)


if __name__ == "__main__":
    # 第一步:创建一个基于IPV4和TCP协议的Socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # socket绑定IP(127.0.0.1为本机IP)与端口。
    s.bind(('127.0.0.1', int(sys.argv[1])))
    # 监听连接。
    s.listen(5)
    print('listening on 127.0.0.1:%d' % s.getsockname()[1])
    print('wating for conn...', flush=True)
    while True:
        # 接收一个新连接,
        sock, addr = s.accept()
        # 创建新线程来处理TCP连接。
        t = threading.Thread(target=dealClient, args=(sock, addr), daemon=True)
        t.start()
