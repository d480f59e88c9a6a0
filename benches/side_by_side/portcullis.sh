#!/usr/bin/env bash
# Runs benches/side_by_side/anchors.sh with portcullis in the race, every guard on: JWT (cached verify),
# grants, per-identity limiter (quota far above the load), sanitize, audit (Metadata, file sink,
# blocking mode). Usage (from the repository root): benches/side_by_side/portcullis.sh [requests] [clients] [streams]; BIN= the binary;
# AUDIT_MODE= blocking-strict | blocking | batch | none (default blocking);
# TOKIO_WORKER_THREADS=1 for one worker like the anchors.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-target/release/portcullis}; BIN=$(realpath "$BIN")
K=$(mktemp -d -t pcbench.XXXX); trap 'rm -rf "$K"' EXIT
. "$HERE/proxy_config.sh"
bench_credentials "$BIN" "$K"
bench_config "$K" @SERVER_CERT@ @SERVER_KEY@ @UPSTREAM@ @UPSTREAM_CA@ "${AUDIT_MODE:-blocking}" >"$K/pc.yaml"
# The proxy runs under a small shell that, when anchors.sh stops it, first writes the CPU time
# the proxy used (user and system ticks from /proc/<pid>/stat). The proxy sits idle while the
# anchors run, so that is its CPU for its own run (plus startup, a few ticks): CPU per request
# is steadier than req/s on a shared machine, where neighbours take the cores.
cat >"$K/cpu.sh" <<'S'
"$@" & p=$!
trap 'read -r -a s < /proc/$p/stat; echo "${s[13]} ${s[14]}" > "$CPU_OUT"; kill $p; wait $p; exit 0' TERM
wait $p
S
export PORTCULLIS_CMD="sed -e \"s#@SERVER_CERT@#\$SERVER_CERT#;s#@SERVER_KEY@#\$SERVER_KEY#;s#@UPSTREAM@#\$UPSTREAM#;s#@UPSTREAM_CA@#\$UPSTREAM_CA#\" $K/pc.yaml > $K/run.yaml && CPU_OUT=$K/cpu exec bash $K/cpu.sh $BIN serve --config $K/run.yaml"
export PORTCULLIS_HEADER="authorization: Bearer $TOKEN"
bash "$HERE/anchors.sh" "$@" | tee "$K/anchors.out"
# The ratios the performance goal is stated in, from this run's lines; then what each proxy adds
# to the p50 latency of direct, printed only for targets with a p50 (run at one connection and
# one stream, `portcullis.sh 5000 1 1`, that is the goal's added p50). No comments inside the
# awk program: it is in single quotes, where an apostrophe would end it.
awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[$1 "," kv[1]] = kv[2] } }
  END { if (v["portcullis,req/s"] > 0 && v["haproxy,req/s"] > 0 && v["direct,req/s"] > 0)
    printf "portcullis / haproxy: req/s %.2f, CPU per request %.2fx; portcullis / direct: req/s %.2f\n",
      v["portcullis,req/s"] / v["haproxy,req/s"], v["portcullis,cpu_us/req"] / v["haproxy,cpu_us/req"],
      v["portcullis,req/s"] / v["direct,req/s"]
    d = v["direct,p50_us"]
    if (d == "" || d == "?") exit
    line = ""
    split("portcullis haproxy nginx", names, " ")
    for (i = 1; i <= 3; i++) { p = v[names[i] ",p50_us"]
      if (p != "" && p != "?") line = line sprintf("%s%s %d us", (line == "" ? "" : ", "), names[i], p - d) }
    if (line != "") print "p50 added to direct: " line }' "$K/anchors.out"
echo "audit events written: $(grep -c '"kind":"Event"' "$K/audit.log" 2>/dev/null)"
if read -r ut st 2>/dev/null <"$K/cpu"; then
  hz=$(getconf CLK_TCK); n=${1:-60000}
  awk -v u="$ut" -v s="$st" -v hz="$hz" -v n="$n" 'BEGIN { printf "portcullis CPU: %.2f s user, %.2f s system; %.1f us per request (startup included)\n", u/hz, s/hz, (u+s)/hz*1e6/n }'
fi
