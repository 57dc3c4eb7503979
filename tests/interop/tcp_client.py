# coding:utf-8
# The TCP client of the Python socket tutorial (usocket seed 004), as it is,
# but with the server's port from the command line:  tcp_client.py PORT
import socket
import sys

port = int(sys.argv[1])
# 初始化Socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
# 连接目标的IP和端口。
s.connect(('127.0.0.1', port))
# 接收数据,
print('-->>', s.recv(1024).decode('utf-8'))
# 发送数据。
s.send(b'Hello,i am a client')
print('-->>' + s.recv(1024).decode('utf-8'))
s.send(b'exit')
# 关闭socket
s.close()
