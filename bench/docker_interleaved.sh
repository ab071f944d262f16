#!/usr/bin/env bash
# What a docker user feels, measured per call instead of per loop: through a real, throwaway
# dockerd, for no plugin, the Go casbin-authz-plugin (allow-all, from ../shared/peers) and
# pyauthz (shipped policy, the local test image excepted from image trust), in interleaved
# rounds; prints, per plugin, the median (and p25) of every single `docker run --rm`, and the
# median of keep-alive `GET /containers/json` calls through dockerd (two plugin calls each).
#
# Run as root from the project root, with pyauthz installed (`pyauthz` on PATH):
#   bash bench/docker_interleaved.sh          # env: ROUNDS=3 RUNS=25 GETS=200 PEERS=../shared/peers
# Needs Debian's docker.io (dockerd, /usr/bin/docker) and busybox-static.
set -u
ROOT=$(pwd); PEERS=${PEERS:-$ROOT/../shared/peers}
ROUNDS=${ROUNDS:-3}; RUNS=${RUNS:-25}; GETS=${GETS:-200}
W=$(mktemp -d /tmp/docker-interleaved.XXXX); DSOCK=$W/docker.sock; PD=/run/docker/plugins; mkdir -p $PD
DOCKER=/usr/bin/docker; export DOCKER_HOST=unix://$DSOCK
command -v pyauthz >/dev/null || { echo "pyauthz is not on PATH: install the project first"; exit 1; }
stop_all() {
  [ -f $W/pid ] && { p=$(cat $W/pid); kill $p 2>/dev/null; while kill -0 $p 2>/dev/null; do sleep 0.1; done; rm -f $W/pid; }
  [ -n "${PLUGIN_PID:-}" ] && { kill -TERM -- -$PLUGIN_PID 2>/dev/null; sleep 1; PLUGIN_PID=; }
  rm -f $PD/dil-pyauthz.sock $PD/casbin-authz-plugin.sock
}
trap 'stop_all; rm -rf $W' EXIT
start_dockerd() {
  setsid dockerd --data-root $W/root --exec-root $W/exec --pidfile $W/pid -H unix://$DSOCK --iptables=false \
    --ip6tables=false --bridge=none --storage-driver=vfs "$@" >>$W/dockerd.log 2>&1 </dev/null &
  for i in $(seq 150); do curl -s --max-time 1 --unix-socket $DSOCK http://d/_ping >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "dockerd did not start: $(tail -2 $W/dockerd.log)"; return 1
}
start_plugin() {  # start_plugin NAME CMD...: in its own session; wait for $PD/NAME.sock
  local n=$1; shift; setsid "$@" >>$W/$n.log 2>&1 </dev/null & PLUGIN_PID=$!
  for i in $(seq 100); do [ -S $PD/$n.sock ] && return 0; sleep 0.1; done; echo "$n did not start"; return 1
}
# the test image, imported while no plugin is on; the shipped policy, the image excepted
start_dockerd || exit 1
mkdir -p $W/rootfs/bin && cp /bin/busybox $W/rootfs/bin/ && ln -sf busybox $W/rootfs/bin/true
tar -C $W/rootfs -c . | $DOCKER import - local/busybox:1 >/dev/null || exit 1
stop_all
cp -r "$ROOT/policies" $W/policy
python3 - $W/policy/trust.yaml <<'PY'
import sys, yaml
p = sys.argv[1]; t = yaml.safe_load(open(p)) or {}
t["exceptions"] = (t.get("exceptions") or []) + [{"pattern": "docker.io/local/busybox", "reason": "benchmark image"}]
yaml.safe_dump(t, open(p, "w"), sort_keys=False)
PY
cat > $W/gets.py <<'PY'
import http.client, socket, statistics, sys, time
class C(http.client.HTTPConnection):
    def __init__(self, path): super().__init__("d"); self.path_ = path
    def connect(self): self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(self.path_)
conn, times = C(sys.argv[1]), []
for i in range(int(sys.argv[2]) + 20):
    t = time.perf_counter(); conn.request("GET", "/v1.41/containers/json"); r = conn.getresponse(); r.read()
    if r.status != 200: sys.exit(f"GET answered {r.status}")
    if i >= 20: times.append(time.perf_counter() - t)
print(round(statistics.median(times) * 1e6))
PY
for r in $(seq $ROUNDS); do
  for k in none go pyauthz; do
    case $k in
      none) start_dockerd ;;
      go) start_plugin casbin-authz-plugin sh -c "cd $PEERS && exec ./casbin-authz-plugin -model allow_model.conf -policy allow_policy.csv" \
            && start_dockerd --authorization-plugin=casbin-authz-plugin ;;
      pyauthz) start_plugin dil-pyauthz sh -c "cd $ROOT && exec pyauthz serve --socket $PD/dil-pyauthz.sock --policy $W/policy --docker-host unix://$DSOCK --log-file $W/decisions.log" \
            && start_dockerd --authorization-plugin=dil-pyauthz ;;
    esac || exit 1
    $DOCKER run --rm local/busybox:1 true >/dev/null || { echo "docker run fails under $k"; exit 1; }
    python3 $W/gets.py $DSOCK $GETS >> $W/get-$k.txt || exit 1
    for i in $(seq $RUNS); do
      t0=$(date +%s%N); $DOCKER run --rm local/busybox:1 true >/dev/null; t1=$(date +%s%N)
      echo $(( (t1 - t0) / 1000 )) >> $W/run-$k.txt
    done
    stop_all
    echo "round $r $k done" >&2
  done
done
python3 - $W <<'PY'
import statistics, sys
w = sys.argv[1]
for k in ("none", "go", "pyauthz"):
    runs = sorted(int(x) for x in open(f"{w}/run-{k}.txt"))
    gets = [int(x) for x in open(f"{w}/get-{k}.txt")]
    print(f"{k:8s} docker run --rm median {statistics.median(runs) / 1000:.1f} ms "
          f"(p25 {runs[len(runs) // 4] / 1000:.1f}, n={len(runs)}); "
          f"GET /containers/json median {statistics.median(gets):.0f} µs")
PY
