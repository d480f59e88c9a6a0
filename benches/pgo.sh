#!/usr/bin/env bash
# A profile-guided (PGO) release build of the `portcullis` binary: an instrumented build, a
# training run through it, then the release build again with that profile. Same code, same
# guards, same release profile (fat LTO); the compiler only lays the program out for the paths
# the training took. Measured results: README "Performance" ("The profile-guided build") and
# benches/PERFORMANCE-LOG.md (2026-12-06, twenty-ninth session). The Containerfile builds the
# shipped image with it.
#
# The training: the proxy in front of the sandbox API server (this binary's `sandbox`, a
# Kubernetes-shaped HTTP server), not the side-by-side harness's nginx, on tokio's
# current-thread runtime (`TOKIO_WORKER_THREADS=1`), in two phases: audit `blocking` to a file
# with the whole mix below, then audit off with reads. The binary it gives is faster on the
# multi-thread runtime too (what the deploy manifests run), and faster there than a binary
# trained on both runtimes (the log has the measurements).
# The mix: creates (configmaps; pods judged by Pod Security `restricted`, admitted and
# refused), JSON merge patches of a pod and a configmap, watches receiving events, lists and
# gets over HTTP/2 (h2load, many streams) and HTTP/1.1, deletes, and refusals: a malformed body
# (400), no token (401), another namespace (403). Reads are most of the requests, as in a
# cluster. Every step's answers are checked (a profile of a proxy refusing everything would lay
# the forwarding path out as cold: a slower binary, with nothing said). Code the training never
# reaches (protobuf bodies, client certificates, exec sessions, webhooks) is compiled and
# correct, only laid out as cold.
#
# Usage (from anywhere): bash benches/pgo.sh [OUT]      OUT defaults to target/pgo/portcullis
# Needs: h2load (apt: nghttp2-client), curl, openssl, and llvm-profdata of rustc's LLVM major
# version: `rustup component add llvm-tools`, or apt `llvm-<major>` (Debian bookworm has
# llvm-22 for rustc 1.95's LLVM 22). LLVM_PROFDATA=path overrides the search. RUSTFLAGS the
# caller set are kept.
# Build directories: target/pgo-gen (instrumented) and target/pgo-use (optimised); each is a
# full release build (4 to 6 minutes each here), the training about a minute and a half.
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
fail() { echo "benches/pgo.sh: $*" >&2; exit 1; }
pids=() proxy=""
cleanup() { # the work directory (logs, configs) is kept when the script fails
  local rc=$?
  for p in "${pids[@]}" ${proxy:-}; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [[ $rc == 0 ]]; then rm -rf "$W"; else echo "benches/pgo.sh failed; its work directory is kept: $W" >&2; fi
}
trap cleanup EXIT

# `--target` (the host's): then RUSTFLAGS reach only the target's code, not build scripts and
# proc-macros, as rustc's PGO guide advises; the binary lands in target/<dir>/<host>/release.
host=$(rustc -vV | sed -n 's/^host: //p')
build() { # TARGET_SUBDIR FLAGS
  (cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} $2" cargo build --release --locked -p portcullis-cli \
    --bin portcullis --target "$host" --target-dir "$ROOT/target/$1")
}

echo "== 1/3 instrumented build (target/pgo-gen)"
# The instrumented binary writes its profile where LLVM_PROFILE_FILE says; this default is for
# runs that set none.
build pgo-gen "-Cprofile-generate=$ROOT/target/pgo-gen/profiles"
BIN=$ROOT/target/pgo-gen/$host/release/portcullis
# Only the proxy's own runs are kept (set below for them); every other run of the binary (the
# sandbox, key and token commands) writes where nothing is merged.
export LLVM_PROFILE_FILE="$W/other/%p.profraw"

echo "== 2/3 training"
cd "$W"
. "$ROOT/benches/side_by_side/proxy_config.sh"
bench_server_cert "$W" || fail "openssl could not make the training's certificates"

"$BIN" sandbox --dir "$W/sandbox" --listen 127.0.0.1:18455 > sandbox.log 2>&1 & pids+=($!)
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
config blocking > pc-blocking.yaml
config none > pc-plain.yaml
grep -q 'resources: \[pods, configmaps\]' pc-blocking.yaml && grep -q 'rate: 1000000/s, burst: 1000000}, watches' pc-blocking.yaml &&
  grep -q 'enforce: restricted' pc-blocking.yaml && grep -q 'mode: blocking$' pc-blocking.yaml ||
  { echo "benches/pgo.sh: the harness config changed shape; update the sed in config()" >&2; exit 1; }

U=https://127.0.0.1:18446
NS=$U/api/v1/namespaces/team-a
AUTH="authorization: Bearer $TOKEN"
wait_port() { # PORT [PID]: until something listens on PORT; fails if PID (when given) exits first
  for _ in $(seq 1 300); do
    [[ -z ${2:-} ]] || kill -0 "$2" 2>/dev/null || fail "the process meant to listen on port $1 exited (logs in $W)"
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.2
  done
  fail "nothing listened on 127.0.0.1:$1 (logs in $W)"
}
# h2load: N requests (other arguments as h2load's), every answer in CLASS (2xx, 4xx).
expect() { # N CLASS h2load-args...
  local n=$1 class=$2 line; shift 2
  line=$(h2load -t 1 -n "$n" "$@" 2>&1 | grep -m1 '^status codes' || true)
  local got; got=$(sed -n "s/.* \([0-9]*\) $class.*/\1/p" <<<"$line")
  [[ $got == "$n" ]] || fail "training step: h2load -n $n $* -> ${line:-no answer}, expected $n $class (see $W/pc.log)"
  echo "$line"
}
say() { # LABEL COMMAND...: the command's output after the label; a failing command stops the script
  local label=$1 out; shift
  out=$("$@")
  echo "$label $out"
}
names() { # URL PREFIX: the names in a list that start with PREFIX-
  curl -s --cacert ca.crt -H "$AUTH" "$1" | { grep -o "\"name\":\"$2-[a-z0-9]*\"" || true; } | cut -d'"' -f4
}

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

wait_port 18455 "${pids[0]}"
for _ in $(seq 1 50); do [[ -s sandbox/ca.crt ]] && break; sleep 0.1; done # written as it starts
# The sandbox authorizes what the proxy impersonates, like an API server: bind the training
# identity's group to cluster-admin in team-a only (the proxy's grant is narrower still).
curl -sf -o /dev/null --cacert sandbox/ca.crt -H 'authorization: Bearer sandbox' -H 'content-type: application/json' \
  -d '{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"pgo","namespace":"team-a"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},"subjects":[{"kind":"Group","apiGroup":"rbac.authorization.k8s.io","name":"bench"}]}' \
  https://127.0.0.1:18455/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings ||
  fail "the sandbox refused the training's RoleBinding (see $W/sandbox.log)"

phase=0
serve() { # CONFIG [ENV=VALUE...]: the proxy in the background, its profile kept (one file per phase)
  local config=$1; shift
  phase=$((phase + 1))
  env -u TOKIO_WORKER_THREADS "$@" LLVM_PROFILE_FILE="$W/train/phase$phase-%p.profraw" "$BIN" serve --config "$config" > "$W/pc.log" 2>&1 &
  proxy=$!
  wait_port 18446 "$proxy"
}
stop() { # the proxy must exit cleanly: its profile is written at exit
  kill -TERM "$proxy"
  local rc=0; wait "$proxy" || rc=$?
  proxy=""
  [[ $rc == 0 ]] || fail "the proxy exited with $rc in phase $phase (see $W/pc.log)"
  ls "$W"/train/phase$phase-*.profraw >/dev/null 2>&1 || fail "phase $phase wrote no profile"
}

mix() {
  say "  creates: " expect 400 2xx -c 4 -m 4 -H "$AUTH" -H 'content-type: application/json' -d cm.json "$NS/configmaps"
  say "  pods:    " expect 200 2xx -c 2 -m 4 -H "$AUTH" -H 'content-type: application/json' -d pod-ok.json "$NS/pods"
  say "  refused: " expect 100 4xx -c 2 -m 4 -H "$AUTH" -H 'content-type: application/json' -d pod-bad.json "$NS/pods"
  pod=$(names "$NS/pods" web | sed -n 1p)
  cm=$(names "$NS/configmaps" pgo | sed -n 1p)
  [[ -n $pod && -n $cm ]] || fail "the training's creates are not listed (see $W/pc.log)"
  # Watches open while objects are created, so events flow through them.
  local watches=() w
  for _ in 1 2 3 4; do curl -s -o /dev/null --cacert ca.crt -H "$AUTH" "$NS/configmaps?watch=1&timeoutSeconds=3" & watches+=($!); done
  sleep 0.5
  say "  +watch:  " expect 200 2xx -c 2 -m 2 -H "$AUTH" -H 'content-type: application/json' -d cm.json "$NS/configmaps"
  for w in "${watches[@]}"; do wait "$w" || fail "a watch failed"; done
  say "  patches: " expect 300 2xx -c 2 -m 2 -H "$AUTH" -H ':method: PATCH' -H 'content-type: application/merge-patch+json' -d patch.json "$NS/pods/$pod"
  say "           " expect 300 2xx -c 2 -m 2 -H "$AUTH" -H ':method: PATCH' -H 'content-type: application/merge-patch+json' -d patch.json "$NS/configmaps/$cm"
  say "  lists:   " expect 20000 2xx -c 16 -m 4 -H "$AUTH" "$NS/pods?limit=10"
  say "  gets:    " expect 10000 2xx -c 8 -m 4 -H "$AUTH" "$NS/configmaps/$cm"
  say "  http/1.1:" expect 5000 2xx --h1 -c 8 -H "$AUTH" "$NS/pods/$pod"
  say "  400:     " expect 200 4xx -c 2 -m 2 -H "$AUTH" -H 'content-type: application/json' -d broken.json "$NS/configmaps"
  say "  403:     " expect 500 4xx -c 2 -m 4 -H "$AUTH" "$U/api/v1/namespaces/kube-system/pods"
  # One request per connection: an HTTP/2 connection whose request fails authentication gets a
  # GOAWAY (kube-apiserver's UnauthenticatedHTTP2DOSMitigation).
  say "  401:     " expect 50 4xx -c 50 -m 1 "$NS/pods"
  local n deleted=0
  for n in $(names "$NS/configmaps?limit=20" pgo | grep -vx "$cm"); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --cacert ca.crt -X DELETE -H "$AUTH" "$NS/configmaps/$n") == 200 ]] ||
      fail "delete of configmap $n failed"
    deleted=$((deleted + 1))
  done
  echo "  deletes:  $deleted"
}

# Both phases on the current-thread runtime. A training that added a phase on the
# multi-thread runtime with audit `blocking-strict` gave a binary slower on BOTH runtimes than
# this one (benches/PERFORMANCE-LOG.md, twenty-ninth session): the code the runtimes share (h2,
# hyper, rustls, the layers) is most of the work, and this profile lays it out better.
echo "phase 1: current-thread runtime (TOKIO_WORKER_THREADS=1), audit blocking"
serve pc-blocking.yaml TOKIO_WORKER_THREADS=1
mix
stop
echo "phase 2: current-thread runtime, audit off"
serve pc-plain.yaml TOKIO_WORKER_THREADS=1
say "  lists:   " expect 20000 2xx -c 16 -m 4 -H "$AUTH" "$NS/pods?limit=10"
say "  gets:    " expect 5000 2xx -c 8 -m 4 -H "$AUTH" "$NS/configmaps/$cm"
stop
"$profdata" merge -o "$W/portcullis.profdata" "$W"/train/phase*.profraw

echo "== 3/3 optimised build (target/pgo-use)"
build pgo-use "-Cprofile-use=$W/portcullis.profdata"
install -D -m 0755 "$ROOT/target/pgo-use/$host/release/portcullis" "$OUT"
echo "profile-guided binary: $OUT"
