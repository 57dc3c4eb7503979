// go_echo: the Go peer of `make bench` — a goroutine per connection, as Go's
// users write it: Read into a 1 KiB buffer (BUFSIZE), Write what came.
// bench/run.sh builds it with the local toolchain (no network, GOCACHE in a
// temporary folder) and runs it with GOMAXPROCS=1.  Go sets TCP_NODELAY on
// every connection by default.
//
//	go_echo PORT [BUFSIZE]      (PORT 0: a free port)
//
// Prints "listening on 127.0.0.1:N".
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go_echo PORT [BUFSIZE]")
		os.Exit(2)
	}
	size := 1024
	if len(os.Args) > 2 {
		size, _ = strconv.Atoi(os.Args[2])
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_echo:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", l.Addr().String())
	os.Stdout.Sync()
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		go func(c net.Conn) {
			buf := make([]byte, size)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
		}(c)
	}
}
