#!/usr/bin/env bash
# A profile-guided (PGO) release build of the `portcullis` binary: an instrumented build, a
# training run through it, then the release build again with that profile. Same code, same
# guards, same release profile (fat LTO); the compiler only lays the program out for the paths
# the training took. On this project's shared 2-core VM it took the side-by-side harness's CPU
# per request from 19.5 to 17.0 us with audit off and from 30 to 26 us in `blocking`
# (benches/PERFORMANCE-LOG.md, 2026-12-06, twenty-ninth session). The Containerfile builds the
# shipped image with it.
#
# The training is NOT the benchmark: the proxy runs in front of the sandbox API server (this
# binary's `sandbox`, a real Kubernetes-shaped HTTP server), not the harness's nginx, and takes
# a mix of what kubectl and controllers send, so paths the harness never takes are laid out as
# used too. Audit `blocking` to a file, then audit off:
#   - lists and gets over HTTP/2 (h2load, many streams) and over HTTP/1.1;
#   - creates (configmaps, and pods judged by Pod Security: admitted and refused), JSON merge
#     patches of a pod and a configmap, deletes;
#   - watches that receive events while objects are created;
#   - refusals: no token (401), another namespace (403), a malformed body (400).
# Code the training never reaches is still compiled and correct, only placed as cold.
#
# Usage (from anywhere): benches/pgo.sh [OUT]      OUT defaults to target/pgo/portcullis
# Needs: h2load (apt: nghttp2-client), curl, openssl, and llvm-profdata of rustc's LLVM major
# version: `rustup component add llvm-tools`, or apt `llvm-<major>` (Debian bookworm has
# llvm-22 for rustc 1.95's LLVM 22). LLVM_PROFDATA=path overrides the search.
# Build directories: target/pgo-gen (instrumented) and target/pgo-use (optimised); each is a
# full release build (about 4 to 6 minutes each here), the training about 1 minute.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/target/pgo/portcullis}")

major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=${LLVM_PROFDATA:-}
if [[ -z $profdata ]]; then
  for c in "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata "llvm-profdata-$major" \
    "/usr/lib/llvm-$major/bin/llvm-profdata"; do
    if command -v "$c" >/dev/null 2>&1; then profdata=$c; break; fi
  done
fi
if [[ -z $profdata ]]; then
  echo "benches/pgo.sh: no llvm-profdata for LLVM $major (rustc's); run \`rustup component add llvm-tools\` or \`apt-get install llvm-$major\`, or set LLVM_PROFDATA" >&2
  exit 1
fi
for tool in h2load curl openssl; do
  command -v $tool >/dev/null || { echo "benches/pgo.sh: $tool is missing (apt-get install -y nghttp2-client curl openssl)" >&2; exit 1; }
done

W=$(mktemp -d -t pgo.XXXX)
pids=()
cleanup() { # the work directory (logs, configs) is kept when the script fails
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [[ $rc == 0 ]]; then rm -rf "$W"; else echo "benches/pgo.sh failed; its work directory is kept: $W" >&2; fi
}
trap cleanup EXIT

build() { # TARGET_SUBDIR RUSTFLAGS
  (cd "$ROOT" && RUSTFLAGS="$2" cargo build --release --locked -p portcullis-cli --bin portcullis \
    --target-dir "$ROOT/target/$1")
}

echo "== 1/3 instrumented build (target/pgo-gen)"
# Build scripts of the dependencies are instrumented too and write their profiles at build
# time; those go beside the build and are never merged. (A fixed path, so that a second run
# rebuilds only what changed.)
build pgo-gen "-Cprofile-generate=$ROOT/target/pgo-gen/build-profiles"
BIN=$ROOT/target/pgo-gen/release/portcullis
# Only the proxy's own runs are kept (set below for them); every other run of the binary (the
# sandbox, key and token commands) writes where nothing is merged.
export LLVM_PROFILE_FILE="$W/other/%p.profraw"

echo "== 2/3 training"
cd "$W"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=pgo-ca -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout srv.key -out srv.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext
openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out srv.crt 2>/dev/null

"$BIN" sandbox --dir "$W/sandbox" --listen 127.0.0.1:18455 > sandbox.log 2>&1 & pids+=($!)
. "$ROOT/benches/side_by_side/proxy_config.sh"
bench_credentials "$BIN" "$W" || true # (it is not written for errexit; $TOKEN is checked below)
[[ -n ${TOKEN:-} ]] || { echo "benches/pgo.sh: could not mint the training token" >&2; exit 1; }
printf 'sandbox\n' > up.token # the sandbox's own token (`sandbox --dir` writes it in its kubeconfig)

# The harness's proxy config (every guard on), with the sandbox upstream, writes granted in
# team-a (pods and configmaps), a write quota the training does not exhaust, and Pod Security
# `restricted` enforced (the harness only reads, so it sets none).
config() { # AUDIT_MODE
  bench_config "$W" "$W/srv.crt" "$W/srv.key" https://127.0.0.1:18455 "$W/sandbox/ca.crt" "$1" |
    sed -e 's/verbs: \[get, list, watch\], api_groups: \[""\], resources: \[pods\]/verbs: [get, list, watch, create, update, patch, delete], api_groups: [""], resources: [pods, configmaps]/' \
      -e 's#writes: {rate: 10/s, burst: 10}#writes: {rate: 1000000/s, burst: 1000000}#' \
      -e 's#^sanitize: {}$#sanitize: {pod_security: {defaults: {enforce: restricted}}}#'
}
config blocking > pc-audit.yaml
config none > pc-plain.yaml
grep -q 'resources: \[pods, configmaps\]' pc-audit.yaml && grep -q 'rate: 1000000/s, burst: 1000000}, watches' pc-audit.yaml &&
  grep -q 'enforce: restricted' pc-audit.yaml ||
  { echo "benches/pgo.sh: the harness config changed shape; update the sed in config()" >&2; exit 1; }

U=https://127.0.0.1:18446
NS=$U/api/v1/namespaces/team-a
AUTH="authorization: Bearer $TOKEN"
wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.2; done; echo "port $1 never opened" >&2; return 1; }
h2() { h2load -t 1 "$@" 2>&1 | grep -m1 '^status codes' || true; }
# The main reads must all be answered 2xx: a profile of a proxy refusing everything would lay
# the forwarding path out as cold, a slower binary with nothing said.
h2ok() { # N h2load-args...
  local n=$1 line; shift
  line=$(h2 -n "$n" "$@")
  [[ $line == "status codes: $n 2xx"* ]] || { echo "benches/pgo.sh: training step failed: h2load -n $n $* -> ${line:-no answer} (see $W/pc.log)" >&2; return 1; }
  echo "$line"
}
say() { # LABEL COMMAND...: the command's output after the label; a failing command stops the script
  local label=$1 out; shift
  out=$("$@")
  echo "$label $out"
}
c() { curl -s -o /dev/null -w '%{http_code} ' --cacert ca.crt "$@" || true; }

cat > cm.json <<'J'
{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"pgo-","labels":{"app":"pgo"}},"data":{"key":"value","other":"a longer value with some text in it"}}
J
cat > pod-ok.json <<'J'
{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-","labels":{"app":"web"}},"spec":{"securityContext":{"runAsNonRoot":true,"seccompProfile":{"type":"RuntimeDefault"}},"containers":[{"name":"web","image":"nginx:1.25","ports":[{"containerPort":8080}],"securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}}
J
cat > pod-bad.json <<'J'
{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"bad-"},"spec":{"hostNetwork":true,"containers":[{"name":"c","image":"busybox","securityContext":{"privileged":true}}]}}
J
printf '{"metadata":{"labels":{"patched":"yes"}}}' > patch.json
printf '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"' > broken.json

wait_port 18455
# The sandbox authorizes what the proxy impersonates, like an API server: bind the training
# identity's group to cluster-admin in team-a only (the proxy's grant is narrower still).
curl -sf -o /dev/null --cacert sandbox/ca.crt -H 'authorization: Bearer sandbox' -H 'content-type: application/json' \
  -d '{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"pgo","namespace":"team-a"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},"subjects":[{"kind":"Group","apiGroup":"rbac.authorization.k8s.io","name":"bench"}]}' \
  https://127.0.0.1:18455/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings ||
  { echo "benches/pgo.sh: the sandbox refused the training's RoleBinding (see $W/sandbox.log)" >&2; exit 1; }
serve() { # CONFIG: the proxy in the background, its profile kept
  LLVM_PROFILE_FILE="$W/train/%m_%p.profraw" TOKIO_WORKER_THREADS=1 "$BIN" serve --config "$1" > "$W/pc.log" 2>&1 &
  proxy=$!; pids+=($proxy)
  wait_port 18446
}
stop() { kill -TERM "$proxy"; wait "$proxy" 2>/dev/null || true; }

serve pc-audit.yaml
echo "creates:  $(h2 -n 400 -c 4 -m 4 -H "$AUTH" -H 'content-type: application/json' -d cm.json "$NS/configmaps")"
echo "pods:     $(h2 -n 200 -c 2 -m 4 -H "$AUTH" -H 'content-type: application/json' -d pod-ok.json "$NS/pods")"
echo "refused:  $(h2 -n 100 -c 2 -m 4 -H "$AUTH" -H 'content-type: application/json' -d pod-bad.json "$NS/pods")"
first() { curl -s --cacert ca.crt -H "$AUTH" "$1" | grep -o "\"name\":\"$2-[a-z0-9]*\"" | sed -n 1p | cut -d'"' -f4; }
pod=$(first "$NS/pods" web)
cm=$(first "$NS/configmaps" pgo)
[[ -n $pod && -n $cm ]] || { echo "benches/pgo.sh: the training's creates failed (see $W/pc.log)" >&2; cat "$W/pc.log" >&2; exit 1; }
# Watches open while objects are created, so events flow through them.
watches=()
for _ in 1 2 3 4; do curl -s -o /dev/null --cacert ca.crt -H "$AUTH" "$NS/configmaps?watch=1&timeoutSeconds=3" & watches+=($!); done
sleep 0.5
echo "+watch:   $(h2 -n 200 -c 2 -m 2 -H "$AUTH" -H 'content-type: application/json' -d cm.json "$NS/configmaps")"
wait "${watches[@]}" || true
echo "patches:  $(h2 -n 300 -c 2 -m 2 -H "$AUTH" -H ':method: PATCH' -H 'content-type: application/merge-patch+json' -d patch.json "$NS/pods/$pod")"
echo "          $(h2 -n 300 -c 2 -m 2 -H "$AUTH" -H ':method: PATCH' -H 'content-type: application/merge-patch+json' -d patch.json "$NS/configmaps/$cm")"
say "lists:" h2ok 20000 -c 16 -m 4 -H "$AUTH" "$NS/pods?limit=10"
say "gets:" h2ok 10000 -c 8 -m 4 -H "$AUTH" "$NS/configmaps/$cm"
say "http/1.1:" h2ok 5000 --h1 -c 8 -H "$AUTH" "$NS/pods/$pod"
echo "400:      $(h2 -n 200 -c 2 -m 2 -H "$AUTH" -H 'content-type: application/json' -d broken.json "$NS/configmaps")"
echo "403:      $(h2 -n 500 -c 2 -m 4 -H "$AUTH" "$U/api/v1/namespaces/kube-system/pods")"
# One request per connection: an HTTP/2 connection whose request fails authentication gets a
# GOAWAY (kube-apiserver's UnauthenticatedHTTP2DOSMitigation).
echo "401:      $(h2 -n 50 -c 50 -m 1 "$NS/pods")"
echo "deletes:  $(curl -s --cacert ca.crt -H "$AUTH" "$NS/configmaps?limit=20" | grep -o '"name":"pgo-[a-z0-9]*"' | cut -d'"' -f4 | grep -v "^$cm$" |
  while read -r n; do c -X DELETE -H "$AUTH" "$NS/configmaps/$n"; done)"
stop
serve pc-plain.yaml
say "audit off, lists:" h2ok 20000 -c 16 -m 4 -H "$AUTH" "$NS/pods?limit=10"
say "          gets:" h2ok 5000 -c 8 -m 4 -H "$AUTH" "$NS/configmaps/$cm"
stop
ls "$W"/train/*.profraw >/dev/null 2>&1 || { echo "benches/pgo.sh: the proxy wrote no profile (did it exit cleanly?)" >&2; exit 1; }
"$profdata" merge -o "$W/portcullis.profdata" "$W"/train/*.profraw

echo "== 3/3 optimised build (target/pgo-use)"
build pgo-use "-Cprofile-use=$W/portcullis.profdata"
install -D -m 0755 "$ROOT/target/pgo-use/release/portcullis" "$OUT"
echo "profile-guided binary: $OUT"
