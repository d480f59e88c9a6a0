# Sourced by benches/side_by_side/portcullis.sh, benches/instructions_per_request.sh and
# benches/pgo.sh: the one definition of the benched proxy (every guard on). Functions, no side
# effects when sourced.

# bench_credentials BIN DIR: a JWT signing key + JWKS, a token for it ($TOKEN), the audit signing
# key, the upstream token and a Metadata audit policy, all in DIR. Sets $TOKEN and $JWKS.
# AUDIT_OMIT_STAGES (e.g. RequestReceived) adds a policy-wide omitStages; UPSTREAM_TOKEN_BYTES
# sets the upstream token's length.
bench_credentials() {
  local bin=$1 dir=$2 key
  "$bin" token keygen --out "$dir/jwt" --kid bench >/dev/null
  key=$(ls "$dir"/jwt/*.key "$dir"/jwt/*.pem 2>/dev/null | head -1); JWKS=$(ls "$dir"/jwt/*.json | head -1)
  TOKEN=$("$bin" token issue --key "$key" --kid bench --issuer https://bench.local --audience portcullis --sub bench --group bench --ttl 2h)
  "$bin" audit keygen --out "$dir/audit.key" >/dev/null 2>&1 || true
  # UPSTREAM_TOKEN_BYTES=N: a random token of N base64url characters instead of the short one
  # (the proxy's own credential in a pod is a projected service-account token, a signed JWT far
  # longer than 11 characters; README "Where a request's CPU goes now").
  if [[ -n ${UPSTREAM_TOKEN_BYTES:-} ]]; then
    local tok
    tok=$(head -c $((UPSTREAM_TOKEN_BYTES * 3 / 4 + 3)) /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d =)
    printf '%s\n' "${tok:0:UPSTREAM_TOKEN_BYTES}" >"$dir/up.token"
  else
    printf 'bench-token\n' >"$dir/up.token"
  fi
  printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n' >"$dir/policy.yaml"
  # Not the shared harness's policy: AUDIT_OMIT_STAGES=RequestReceived measures what a policy
  # that omits that stage (as config/audit-policy.yaml does) saves; unset, the policy is the harness's.
  [[ -n ${AUDIT_OMIT_STAGES:-} ]] && printf 'omitStages: [%s]\n' "$AUDIT_OMIT_STAGES" >>"$dir/policy.yaml"
  return 0
}

# bench_server_cert DIR: a throwaway CA (ca.crt / ca.key) and a server certificate for
# localhost and 127.0.0.1 signed by it (srv.crt / srv.key), in DIR.
bench_server_cert() {
  local d=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout "$d/srv.key" -out "$d/srv.csr" 2>/dev/null &&
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$d/ext" &&
    openssl x509 -req -in "$d/srv.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 -extfile "$d/ext" -out "$d/srv.crt" 2>/dev/null
}

# bench_config DIR CERT KEY UPSTREAM UPSTREAM_CA AUDIT_MODE: the proxy config on stdout (DIR holds
# what bench_credentials wrote; AUDIT_MODE none leaves audit out).
bench_config() {
  local dir=$1 cert=$2 key=$3 upstream=$4 ca=$5 mode=$6
  cat <<Y
listen: {address: 127.0.0.1:18446, tls: {cert_file: $cert, key_file: $key}}
admin: {address: 127.0.0.1:18447}
authentication:
  jwt:
    - issuer: {url: https://bench.local, audiences: [portcullis], jwks_file: $JWKS}
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
upstream: {url: $upstream, ca_file: $ca, credentials: {token_file: $dir/up.token}}
Y
  [[ $mode == none ]] || cat <<Y
audit:
  policy_file: $dir/policy.yaml
  signing_key_file: $dir/audit.key
  sinks:
    - name: file
      file: {path: $dir/audit.log}
      mode: $mode
Y
  [[ $mode == batch ]] && echo "      overflow: block"
  return 0
}
