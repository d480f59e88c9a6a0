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
export PORTCULLIS_CMD="sed -e \"s#@SERVER_CERT@#\$SERVER_CERT#;s#@SERVER_KEY@#\$SERVER_KEY#;s#@UPSTREAM@#\$UPSTREAM#;s#@UPSTREAM_CA@#\$UPSTREAM_CA#\" $K/pc.yaml > $K/run.yaml && exec $BIN serve --config $K/run.yaml"
export PORTCULLIS_HEADER="authorization: Bearer $TOKEN"
bash "$HERE/anchors.sh" "$@"
echo "audit events written: $(grep -c '"kind":"Event"' "$K/audit.log" 2>/dev/null)"
