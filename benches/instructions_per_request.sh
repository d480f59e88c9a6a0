#!/usr/bin/env bash
# Instructions per request of one or more portcullis binaries, counted by callgrind: the number
# does not move with other load on this shared 2-core machine, unlike req/s or CPU time, so it is
# how we compare two builds (a refactor, an optimisation) without a quiet machine.
#
# Workload: the shared harness's (../shared/bench/portcullis.sh): TLS + HTTP/2, 32 connections x
# 4 streams, a 2 KiB pod list from nginx, every guard on (JWT cached verify, a grant, the
# limiter, sanitize, audit Metadata to a file, AUDIT_MODE default blocking). Each binary serves
# 500 and then 2500 requests under callgrind; (Ir(2500) - Ir(500)) / 2000 is the per-request
# cost with startup and TLS handshakes cancelled out.
#
# Needs: apt-get install -y valgrind nginx nghttp2-client
# Usage: benches/instructions_per_request.sh TOOLS_BIN BIN [BIN...]   (TOOLS_BIN mints the keys)
# PC_EXTRA_YAML is appended to the proxy's config, e.g. to measure traces (an OTLP sink that
# answers 200 listens on 127.0.0.1:18448):
#   PC_EXTRA_YAML=$'tracing:\n  endpoint: http://127.0.0.1:18448\n  sampling_ratio: 0.01' benches/...
# PC_SED is a sed script applied to the proxy's config (to change a key the config already has),
# e.g. a per-identity in-flight cap: PC_SED='s/sessions: 1}/sessions: 1, in_flight: 1000}/'
# COUNT=perf runs the binary natively under `perf record -g` instead (apt-get install -y
# linux-perf) and prints where its CPU time went (self time by symbol); the proportions hold on a
# shared machine, the absolute times do not (KEEP_PERF=file keeps perf.data). It also prints the resident memory after the run.
# UPSTREAM_TOKEN_BYTES=N gives the proxy a random N-character upstream token instead of the
# short one (the proxy's own token in a pod is a signed JWT; see proxy_config.sh).
# COUNT=syscalls runs it natively under `perf stat` and prints, per request, the system calls
# that move bytes or wait (writev, write, recvfrom, read, epoll_wait, futex, fdatasync) and the context
# switches, under the same 40 000-request load: what batching per turn and per write buys.
# Each binary's heap allocations per request are printed beside its instructions: the calls
# into the allocator (`__rust_alloc`, `__rust_alloc_zeroed`, libc `malloc` / `calloc`;
# reallocations apart) that callgrind recorded in the same two runs, by callgrind_calls.py.
# That works with any global allocator (valgrind's DHAT, used before, cannot see mimalloc's).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d -t ab.XXXX); chmod 755 "$W"; cd "$W"
# The work directory (keys, logs, each binary's cg.500.out / cg.2500.out) is removed at exit;
# KEEP_WORK=1 keeps it and prints where it is.
pids=(); cleanup() {
 for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null
 if [ -n "${KEEP_WORK:-}" ]; then echo "work directory kept: $W"; else cd / && rm -rf "$W"; fi
}; trap cleanup EXIT
. "$HERE/side_by_side/proxy_config.sh"
bench_server_cert "$W"
python3 -c '
import json
items=[{"metadata":{"name":f"web-{i}","namespace":"team-a","uid":f"0000-{i}","resourceVersion":str(1000+i),"labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"nginx:1.25"}]},"status":{"phase":"Running"}} for i in range(8)]
print(json.dumps({"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"2000"},"items":items}))' > pods.json
cat > up.conf <<C
worker_processes 1; pid $W/up.pid; error_log $W/up.err; daemon off;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18443 ssl http2; ssl_certificate $W/srv.crt; ssl_certificate_key $W/srv.key; keepalive_requests 1000000;
 location / { default_type application/json; root $W; try_files /pods.json =404; } }
 server { listen 127.0.0.1:18448; access_log off; location / { return 200; } } }
C
nginx -c "$W/up.conf" & pids+=($!)
B1=$1
bench_credentials "$B1" "$W"
bench_config "$W" "$W/srv.crt" "$W/srv.key" https://127.0.0.1:18443 "$W/ca.crt" "${AUDIT_MODE:-blocking}" > pc.yaml
[ -n "${PC_EXTRA_YAML:-}" ] && printf '%s\n' "$PC_EXTRA_YAML" >> pc.yaml
[ -n "${PC_SED:-}" ] && sed -i -e "$PC_SED" pc.yaml
sleep 1
shift
for B in "$@"; do
 for n in 500 2500; do
  rm -f audit.log* cg.out
  if [ "${COUNT:-instructions}" = syscalls ]; then
   [ "$n" = 500 ] && continue
   TOKIO_WORKER_THREADS=1 "$B" serve --config pc.yaml > pc.log 2>&1 & p=$!
   for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/18446) 2>/dev/null && break; sleep 0.2; done
   ev=context-switches; for c in writev write recvfrom read epoll_wait futex fdatasync; do ev="$ev,syscalls:sys_enter_$c"; done
   perf stat -e "$ev" -x, -o stat.out -p $p & rec=$!
   sleep 0.5
   h2load -n 40000 -c ${CLIENTS:-32} -m ${STREAMS:-4} -t 1 -H "authorization: Bearer $TOKEN" https://127.0.0.1:18446/api/v1/namespaces/team-a/pods > h2.out 2>&1
   kill -INT $rec; wait $rec 2>/dev/null; kill $p; wait $p 2>/dev/null
   echo "$B: $(grep -m1 '^status codes' h2.out)"
   awk -F, '/^[0-9]/ { sub("syscalls:sys_enter_", "", $3); printf "  %-16s %6.2f per request\n", $3, $1 / 40000 }' stat.out
   continue
  fi
  if [ "${COUNT:-instructions}" = perf ]; then
   [ "$n" = 500 ] && continue
   TOKIO_WORKER_THREADS=1 "$B" serve --config pc.yaml > pc.log 2>&1 & p=$!
   for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/18446) 2>/dev/null && break; sleep 0.2; done
   perf record -q -F ${PERF_FREQ:-2000} ${PERF_G:--g} -p $p -o perf.data >/dev/null 2>&1 & rec=$!
   h2load -n 40000 -c ${CLIENTS:-32} -m ${STREAMS:-4} -t 1 -H "authorization: Bearer $TOKEN" https://127.0.0.1:18446/api/v1/namespaces/team-a/pods > h2.out 2>&1
   kill -INT $rec; wait $rec 2>/dev/null
   rss=$(awk '/^VmRSS/ {print $2 " " $3}' /proc/$p/status); kill $p; wait $p 2>/dev/null
   echo "$B: $(grep -m1 '^status codes' h2.out); RSS after the run $rss"
   [ -n "${KEEP_PERF:-}" ] && cp perf.data "$KEEP_PERF"
   perf report -i perf.data --stdio --no-children --sort symbol 2>/dev/null | grep -E '^ +[0-9.]+%' | head -${PERF_TOP:-25}
   continue
  fi
  TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file=cg.out "$B" serve --config pc.yaml > pc.log 2>&1 & p=$!
  for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/18446) 2>/dev/null && break; sleep 0.2; done
  h2load -n "$n" -c ${CLIENTS:-32} -m ${STREAMS:-4} -t 1 -H "authorization: Bearer $TOKEN" https://127.0.0.1:18446/api/v1/namespaces/team-a/pods > h2.out 2>&1
  kill $p; wait $p 2>/dev/null
  ir=$(grep -m1 "^summary:" cg.out | awk '{print $2}')
  read -r allocs grow < <(python3 "$HERE/callgrind_calls.py" cg.out)
  eval "allocs_$n=$allocs grow_$n=$grow"
  # Kept (with KEEP_WORK=1) for a per-function difference of the two runs (callgrind_annotate on each).
  cp cg.out "cg.$n.out" 2>/dev/null
  ok=$(sed -n "s/^status codes: \([0-9]*\) 2xx.*/\1/p" h2.out)
  echo "$B n=$n 2xx=$ok instructions=$ir allocations=$allocs"
  eval "ir_$n=$ir"
 done
 [ "${COUNT:-instructions}" != instructions ] && continue
 echo "$B instructions/request=$(( (ir_2500 - ir_500) / 2000 ))"
 # Two decimals: one allocation saved every few requests shows.
 echo "$B allocations/request=$(awk "BEGIN{printf \"%.2f\", ($allocs_2500 - $allocs_500) / 2000}") reallocations/request=$(awk "BEGIN{printf \"%.2f\", ($grow_2500 - $grow_500) / 2000}")"
done
