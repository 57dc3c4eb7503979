# coding:utf-8
# The UDP server of the Python socket tutorial (usocket seed 004), with the
# port from the command line:
#
#     udp_server.py PORT      (0 picks a free port)
#
# It prints "bind udp on PORT..." with the port it bound.  Stop it with
# SIGTERM.
import socket
import sys

# 创建Socket,绑定指定的IP和端口。
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', int(sys.argv[1])))
print('bind udp on %d...' % s.getsockname()[1], flush=True)
while True:
    # 直接发送数据和接收数据。
    data, addr = s.recvfrom(1024)
    print('received from %s:%s.' % addr, flush=True)
    s.sendto(b'hello,%s!' % data, addr)
