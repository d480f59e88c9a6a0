#!/usr/bin/env bash
# What TLS session resumption saves the proxy per new client connection, with client
# certificates (mTLS): `openssl s_time` opens connections for 5 s each round, every one with a
# full handshake (-new) or resuming the first one's session (-reuse), and sends one
# `GET /version` on each (no upstream runs, so the proxy answers it 503 quickly; the request is
# what makes the client read the TLS 1.3 session tickets). Prints, per mode and round, the
# proxy's CPU per connection (its /proc ticks before and after) and the client's connections
# per second of its own CPU time.
#
# A resumed session skips the server's signature and the client certificate's verification;
# the proxy still checks on every request that the certificate is within its validity period
# (src/authn/x509.rs).
#
# Needs: openssl. Usage: benches/tls_resumption.sh BIN [ROUNDS]
set -u
BIN=$1 ROUNDS=${2:-3}
W=$(mktemp -d -t tlsres.XXXX); trap 'kill $P 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
cd "$W"
key() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$1" -keyout "$2.key" -out "$2.csr" 2>/dev/null; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.crt 2>/dev/null
key /CN=localhost srv; printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > srv.ext
key "/CN=bench/O=bench" cl; printf 'extendedKeyUsage=clientAuth\n' > cl.ext
for c in srv cl; do openssl x509 -req -in $c.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile $c.ext -out $c.crt 2>/dev/null; done
printf 'token\n' > up.token
cat > pc.yaml <<Y
listen: {address: 127.0.0.1:18456, tls: {cert_file: $W/srv.crt, key_file: $W/srv.key}}
admin: {address: 127.0.0.1:18457}
authentication:
  client_certificates: {ca_files: [$W/ca.crt], mode: required}
authorization:
  grants:
    - {name: bench, subjects: [{group: bench}], rules: [{non_resource_urls: ["/version"], verbs: [get]}]}
upstream: {url: https://127.0.0.1:18999, ca_file: $W/ca.crt, credentials: {token_file: $W/up.token}}
Y
TOKIO_WORKER_THREADS=1 RUST_LOG=error "$BIN" serve --config pc.yaml > pc.log 2>&1 & P=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/18456) 2>/dev/null && break; sleep 0.1; done
ticks() { awk '{print $14 + $15}' /proc/$P/stat; }
hz=$(getconf CLK_TCK)
for round in $(seq 1 "$ROUNDS"); do
  for mode in new reuse; do
    t0=$(ticks)
    out=$(openssl s_time -connect 127.0.0.1:18456 -$mode -time 5 -cert cl.crt -key cl.key -CAfile ca.crt -www /version 2>&1)
    t1=$(ticks)
    n=$(echo "$out" | sed -n 's/^\([0-9]*\) connections in [0-9.]*s;.*/\1/p' | head -1)
    per=$(echo "$out" | sed -n 's/.*; \([0-9.]*\) connections\/user sec.*/\1/p' | head -1)
    awk -v m=$mode -v r=$round -v n="$n" -v t=$((t1 - t0)) -v hz=$hz -v c="$per" \
      'BEGIN { printf "round %d %-5s connections=%d proxy_cpu_us/connection=%.0f client_connections/cpu_s=%s\n", r, m, n, t * 1e6 / hz / n, c }'
  done
done
