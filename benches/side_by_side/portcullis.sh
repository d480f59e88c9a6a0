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
"$BIN" token keygen --out "$K/jwt" --kid bench >/dev/null
key=$(ls "$K"/jwt/*.key "$K"/jwt/*.pem 2>/dev/null | head -1); jwks=$(ls "$K"/jwt/*.json | head -1)
TOKEN=$("$BIN" token issue --key "$key" --kid bench --issuer https://bench.local --audience portcullis --sub bench --group bench --ttl 2h)
"$BIN" audit keygen --out "$K/audit.key" >/dev/null 2>&1 || true
printf 'bench-token\n' >"$K/up.token"
cat >"$K/policy.yaml" <<Y
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
Y
AUDIT_BLOCK=
[[ ${AUDIT_MODE:-} != none ]] && AUDIT_BLOCK="audit:
  policy_file: $K/policy.yaml
  signing_key_file: $K/audit.key
  sinks:
    - name: file
      file: {path: $K/audit.log}
      mode: ${AUDIT_MODE:-blocking}"
cat >"$K/pc.yaml" <<Y
listen: {address: 127.0.0.1:18446, tls: {cert_file: @SERVER_CERT@, key_file: @SERVER_KEY@}}
admin: {address: 127.0.0.1:18447}
authentication:
  jwt:
    - issuer: {url: https://bench.local, audiences: [portcullis], jwks_file: $jwks}
      algorithms: [ES256]
      claim_mappings: {username: {claim: sub, prefix: ""}, groups: {claim: groups, prefix: ""}}
authorization:
  grants:
    - name: bench
      subjects: [{group: bench}]
      rules: [{namespaces: [team-a], verbs: [get, list, watch], api_groups: [""], resources: [pods]}]
rate_limits:
  mode: enforce
  default: {reads: {rate: 1000000/s, burst: 1000000}, writes: {rate: 10/s, burst: 10}, watches: 10, sessions: 1}
sanitize: {}
$AUDIT_BLOCK
upstream: {url: @UPSTREAM@, ca_file: @UPSTREAM_CA@, credentials: {token_file: $K/up.token}}
Y
export PORTCULLIS_CMD="sed -e \"s#@SERVER_CERT@#\$SERVER_CERT#;s#@SERVER_KEY@#\$SERVER_KEY#;s#@UPSTREAM@#\$UPSTREAM#;s#@UPSTREAM_CA@#\$UPSTREAM_CA#\" $K/pc.yaml > $K/run.yaml && exec $BIN serve --config $K/run.yaml"
export PORTCULLIS_HEADER="authorization: Bearer $TOKEN"
bash "$HERE/anchors.sh" "$@"
echo "audit events written: $(grep -c '"kind":"Event"' "$K/audit.log" 2>/dev/null)"
