# shellcheck shell=bash disable=SC2034 # the variables are used by the scripts that source this
# The local copy of the reference topology (deploy/README.md), shared by
# up, down, test and restore-drill: one network namespace per zone, site
# and edge, all on one bridge (a flat 10.0.0.0/8), each process with its own
# address in its namespace.

RUN=${GEIGER_LOCAL_DIR:-/var/tmp/geiger-local}
BRIDGE=gg-br0
HOST_ADDR=10.99.0.1
NAME=api.geiger.test
DNS_ADDR=10.99.0.53
PROM_ADDR=10.99.0.90
AM_ADDR=10.99.0.93
CLUSTER=geiger-local
ADMIN_TOKEN_FILE=$RUN/secrets/admin-token

# namespace: its addresses
declare -A NS_ADDRS=(
  [gg-a1]="10.10.1.11 10.10.1.12"
  [gg-a2]="10.10.2.11"
  [gg-b1]="10.20.1.11 10.20.1.12"
  [gg-b2]="10.20.2.11"
  [gg-p]="10.30.0.11 10.30.0.21 10.30.0.22 10.30.0.100"
  [gg-ea]="10.10.0.100"
  [gg-eb]="10.20.0.100"
  [gg-ops]="$DNS_ADDR $PROM_ADDR $AM_ADDR"
  [gg-cl]="10.99.0.10"
)
NAMESPACES="gg-a1 gg-a2 gg-b1 gg-b2 gg-p gg-ea gg-eb gg-ops gg-cl"

# id namespace address zone cloud role
NODES="
1 gg-a1 10.10.1.11 cloud-a-zone-1 cloud-a voter
2 gg-a2 10.10.2.11 cloud-a-zone-2 cloud-a voter
3 gg-b1 10.20.1.11 cloud-b-zone-1 cloud-b voter
4 gg-b2 10.20.2.11 cloud-b-zone-2 cloud-b voter
5 gg-p 10.30.0.11 onprem onprem voter
6 gg-a1 10.10.1.12 cloud-a-zone-1 cloud-a learner
7 gg-b1 10.20.1.12 cloud-b-zone-1 cloud-b learner
"
# device namespace address
DEVICES="
hwrng0 gg-p 10.30.0.21
hwrng1 gg-p 10.30.0.22
"
# edge namespace address config
EDGES="
cloud-a gg-ea 10.10.0.100 haproxy-cloud-a.cfg
cloud-b gg-eb 10.20.0.100 haproxy-cloud-b.cfg
onprem gg-p 10.30.0.100 haproxy-onprem.cfg
"
# What a cut takes down: the namespaces of a zone, a cloud, the site.
declare -A CUTS=(
  [zone-a1]="gg-a1"
  [zone-a2]="gg-a2"
  [zone-b1]="gg-b1"
  [zone-b2]="gg-b2"
  [cloud-a]="gg-a1 gg-a2 gg-ea"
  [cloud-b]="gg-b1 gg-b2 gg-eb"
  [site]="gg-p"
)

# The host side of a namespace's link on the bridge.
host_if() { echo "v-$1"; }

node_field() { # id field-number (1 id, 2 ns, 3 addr, 4 zone, 5 cloud, 6 role)
  awk -v id="$1" -v f="$2" '$1 == id { print $f }' <<<"$NODES"
}

node_ids() { awk 'NF { print $1 }' <<<"$NODES"; }

# Starts a command in a namespace, in the background, its output in
# $RUN/log/NAME.log and its pid in $RUN/pids/NAME (the pid of the command
# itself: `ip netns exec` and `setsid` both exec in place).
start_in() {
  local ns=$1 name=$2
  shift 2
  mkdir -p "$RUN/log" "$RUN/pids"
  ip netns exec "$ns" setsid "$@" >>"$RUN/log/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/pids/$name"
}

# Stops what start_in started, by its recorded pid: TERM, then KILL.
stop_one() {
  local pidfile=$RUN/pids/$1 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

admin_token() { cat "$ADMIN_TOKEN_FILE"; }

# curl from the client namespace (which resolves through the local DNS).
ccurl() { ip netns exec gg-cl curl --silent --show-error --max-time 5 "$@"; }

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local limit=$1 started=$SECONDS
  shift
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - started >= limit )); then return 1; fi
    sleep 0.3
  done
}
