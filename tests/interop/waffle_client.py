# coding:utf-8
# The Waffle Nano TCP client of the usocket documentation (seed 001), in
# CPython on loopback, with the server's port from the command line and
# without the WLAN set-up:  waffle_client.py PORT
import socket
import sys

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # 创建socket对象
addr = ('127.0.0.1', int(sys.argv[1]))  # waffle nano地址
s.connect(addr)  # 客户端接收连接请求
data = s.recv(1024)  # 客户端接收数据
print(str(data, 'utf8'))  # 将数据解码成utf-8格式接收
s.close()
