// chan.go: items per second through Go channels, the counterpart of
// bench/chan_bench.c, one "name=value items/s" line per scenario:
//
//	hub1_cap0, hub1_cap128   a sender and a receiver goroutine; run it
//	                         with GOMAXPROCS=1 for the one-hub comparison
//	hub2_cap0, hub2_cap128   the same with runtime.GOMAXPROCS(2) and each
//	                         goroutine locked to an OS thread of its own
//
// go run chan.go [quick]
package main

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

const runs = 3

func run(n int, capacity int, twoThreads bool) float64 {
	ch := make(chan int64, capacity)
	done := make(chan bool)
	bad := false
	t0 := time.Now()
	go func() {
		if twoThreads {
			runtime.LockOSThread()
		}
		for i := int64(0); i < int64(n); i++ {
			if <-ch != i {
				bad = true
			}
		}
		done <- true
	}()
	go func() {
		if twoThreads {
			runtime.LockOSThread()
		}
		for i := int64(0); i < int64(n); i++ {
			ch <- i
		}
	}()
	<-done
	t := time.Since(t0).Seconds()
	if bad {
		return -1
	}
	return float64(n) / t
}

func scenario(name string, n int, capacity int, twoThreads bool) {
	best := -1.0
	for i := 0; i < runs; i++ {
		if r := run(n, capacity, twoThreads); r > best {
			best = r
		}
	}
	fmt.Printf("%s=%.0f items/s\n", name, best)
}

func main() {
	n := 2000000
	if (len(os.Args) > 1 && os.Args[1] == "quick") || os.Getenv("BENCH_QUICK") == "1" {
		n = 200000
	}
	procs := runtime.GOMAXPROCS(0)
	if procs == 1 {
		scenario("hub1_cap0", n, 0, false)
		scenario("hub1_cap128", n, 128, false)
		return
	}
	runtime.GOMAXPROCS(2)
	scenario("hub2_cap0", n/4, 0, true)
	scenario("hub2_cap128", n/4, 128, true)
}
