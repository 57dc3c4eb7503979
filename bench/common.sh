# bench/common.sh — what bench/run.sh and bench/profile.sh share (sourced).

# PIN0 / PIN1: taskset prefixes for the server (CPU 0) and the load
# generator (CPU 1), empty when there is no taskset or only one CPU.
PIN0= PIN1=
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    PIN0="taskset -c 0" PIN1="taskset -c 1"
fi

# server KIND -> program and arguments after the port
srv_cmd() {
    case $1 in
    base) echo "baseline_epoll" ;;
    ev | poll | epoll) echo "usock_echo" ;;
    pthread) echo "pthread_echo" ;;
    naive) echo "naive_echo" ;;
    libuv) echo "uv_echo" ;;
    st) echo "st_echo" ;;
    go) echo "go_echo" ;;
    ubase) echo "baseline_udp" ;;
    uev) echo "usock_udp" ;;
    esac
}
srv_env() {
    case $1 in
    poll) echo "USOCKET_REACTOR=poll" ;;
    epoll) echo "USOCKET_REACTOR=epoll" ;;
    go) echo "GOMAXPROCS=1" ;;
    *) echo "USOCKET_REACTOR=ev" ;;
    esac
}

# wait_port FILE: wait (5 s at most) for a server's "listening on …:PORT"
# line in FILE and print PORT (nothing if it never came).
wait_port() {
    i=0
    while ! grep -q '^listening on' "$1" && [ $i -lt 100 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    sed -n 's/^listening on .*:\([0-9,]*\)$/\1/p' "$1"
}
