# coding:utf-8
# The UDP client of the Python socket tutorial (usocket seed 004), as it is,
# but with the server's port from the command line and a 10 s timeout on
# each reply (the tutorial would wait forever):  udp_client.py PORT
import socket
import sys

port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
for data in [b'hello', b'world', b'python', b'android', b'java']:
    # 发送数据
    s.sendto(data, ('127.0.0.1', port))
    # 接收数据,
    print(s.recv(1024).decode('utf-8'))
s.close()
