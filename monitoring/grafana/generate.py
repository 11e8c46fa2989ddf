"""Generates geiger.json, the Grafana dashboard (Grafana 9+ schema).

Edit this file, not the JSON: `python3 monitoring/grafana/generate.py`
rewrites monitoring/grafana/geiger.json (or the path given), and
monitoring/check.sh fails if the committed JSON differs from the output.
"""
import json, os, sys
DS = {"type": "prometheus", "uid": "${datasource}"}
panels = []
pid = [0]
y = [0]
def nid():
    pid[0] += 1
    return pid[0]
def row(title):
    panels.append({"type": "row", "title": title, "id": nid(), "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    y[0] += 1
x = [0]
def place(w, h):
    if x[0] + w > 24:
        x[0] = 0; y[0] += place.h
    pos = {"h": h, "w": w, "x": x[0], "y": y[0]}
    x[0] += w; place.h = h
    return pos
place.h = 0
def endrow():
    if x[0]:
        y[0] += place.h; x[0] = 0
def targets(exprs):
    return [{"datasource": DS, "expr": e, "legendFormat": l, "refId": chr(65 + i)}
            for i, (e, l) in enumerate(exprs)]
def ts(title, exprs, unit="short", w=8, h=8, desc="", thresholds=None, stack=False, minv=None, maxv=None, base="green"):
    fc = {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10,
           "stacking": {"mode": "normal" if stack else "none"}}}, "overrides": []}
    if minv is not None: fc["defaults"]["min"] = minv
    if maxv is not None: fc["defaults"]["max"] = maxv
    if thresholds:
        fc["defaults"]["thresholds"] = {"mode": "absolute", "steps":
            [{"color": base, "value": None}] + [{"color": c, "value": v} for v, c in thresholds]}
        fc["defaults"]["custom"]["thresholdsStyle"] = {"mode": "line"}
    panels.append({"type": "timeseries", "title": title, "id": nid(), "datasource": DS,
                   "description": desc, "gridPos": place(w, h), "fieldConfig": fc,
                   "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                               "tooltip": {"mode": "multi"}},
                   "targets": targets(exprs)})
def stat(title, expr, unit="short", w=4, h=4, desc="", steps=None, decimals=None, mappings=None):
    d = {"unit": unit}
    if decimals is not None: d["decimals"] = decimals
    d["thresholds"] = {"mode": "absolute", "steps": steps or [{"color": "green", "value": None}]}
    if mappings: d["mappings"] = mappings
    panels.append({"type": "stat", "title": title, "id": nid(), "datasource": DS,
                   "description": desc, "gridPos": place(w, h),
                   "fieldConfig": {"defaults": d, "overrides": []},
                   "options": {"colorMode": "background", "graphMode": "none",
                               "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                               "textMode": "auto"},
                   "targets": targets([(expr, "")])})
def table(title, expr, w=12, h=6, desc=""):
    panels.append({"type": "table", "title": title, "id": nid(), "datasource": DS,
                   "description": desc, "gridPos": place(w, h),
                   "fieldConfig": {"defaults": {}, "overrides": []},
                   "options": {"showHeader": True},
                   "transformations": [{"id": "labelsToFields", "options": {}},
                                       {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True}}}],
                   "targets": [{"datasource": DS, "expr": expr, "format": "table", "instant": True, "refId": "A"}]})

C = 'cluster="$cluster"'
N = 'cluster="$cluster",zone=~"$zone",node=~"$node"'
R = [{"color": "red", "value": None}]
G = lambda v: {"color": "green", "value": v}
O = lambda v: {"color": "orange", "value": v}

row("Overview")
stat("Nodes up", f'sum(up{{job="geiger",{C}}})', desc="Targets Prometheus can scrape.", steps=R + [O(3), G(5)])
stat("Voters up / quorum", f'cluster:geiger_raft_voters_up:count{{{C}}} - on(cluster) cluster:geiger_raft_quorum:size{{{C}}}',
     desc="Voters alive minus quorum size: 0 = one more loss loses quorum (GeigerQuorumAtRisk), below 0 = no quorum.",
     steps=R + [O(0), G(1)], decimals=0)
stat("Leader (node id)", f'max(geiger_raft_leader_id{{job="geiger",{C}}})', desc="-1: no leader known.",
     steps=R + [G(0)], decimals=0)
stat("Term", f'max(geiger_raft_term{{job="geiger",{C}}})', decimals=0)
stat("Links up", f'sum(cluster_device:geiger_link_up:max{{{C}}}) / count(cluster_device:geiger_link_up:max{{{C}}})',
     unit="percentunit", steps=R + [O(0.01), G(0.999)])
stat("Pool time left", f'cluster:geiger_pool_depth_seconds:sum{{{C}}}', unit="s",
     desc="Whole pool at current demand. Page under 10 min, ticket under 30 min.", steps=R + [O(600), G(1800)])
endrow()
stat("Draw SLI, 1h", f'1 - cluster:geiger_draw_requests_bad:ratio_rate1h{{{C}}}', unit="percentunit", decimals=5,
     w=6, steps=R + [O(0.9985), G(0.9999)], desc="Good draws (non-5xx and within 50 ms) over all draws, last hour.")
stat("Draw SLI, 30 days", f'cluster:geiger_draw_requests:availability30d{{{C}}}', unit="percentunit", decimals=6,
     w=6, steps=R + [G(0.9999)], desc="SLO for burn alerts: 99.99 %. Design target: eight nines of time.")
stat("Burn rate, 1h (x budget)", f'cluster:geiger_draw_requests_bad:ratio_rate1h{{{C}}} / 0.0001', w=6, decimals=2,
     steps=[{"color": "green", "value": None}, O(1), {"color": "red", "value": 14.4}])
stat("Draws / s", f'cluster:geiger_draw_requests:rate5m{{{C}}}', unit="reqps", w=6)
endrow()
table("Alerts firing", f'ALERTS{{alertstate="firing",alertname=~"Geiger.*",alertname!="GeigerWatchdog"}}', w=24, h=5,
      desc="From this Prometheus's rules (alerts pushed by the control plane are in Alertmanager only).")
endrow()

row("SLO and HTTP")
ts("Bad draw ratio by window", [
    (f'cluster:geiger_draw_requests_bad:ratio_rate5m{{{C}}}', "5m"),
    (f'cluster:geiger_draw_requests_bad:ratio_rate30m{{{C}}}', "30m"),
    (f'cluster:geiger_draw_requests_bad:ratio_rate1h{{{C}}}', "1h"),
    (f'cluster:geiger_draw_requests_bad:ratio_rate6h{{{C}}}', "6h"),
  ], unit="percentunit", thresholds=[(0.0006, "orange"), (0.00144, "red")],
  desc="Lines at 6x (0.06 %) and 14.4x (0.144 %) of the 99.99 % SLO budget.")
ts("Draw latency", [
    (f'histogram_quantile(0.5, sum by (le) (rate(geiger_http_request_duration_seconds_bucket{{job="geiger",{N},route="/v1/draws",method="POST"}}[5m])))', "p50"),
    (f'histogram_quantile(0.99, sum by (le) (rate(geiger_http_request_duration_seconds_bucket{{job="geiger",{N},route="/v1/draws",method="POST"}}[5m])))', "p99"),
    (f'histogram_quantile(0.999, sum by (le) (rate(geiger_http_request_duration_seconds_bucket{{job="geiger",{N},route="/v1/draws",method="POST"}}[5m])))', "p99.9"),
  ], unit="s", thresholds=[(0.05, "red")], desc="POST /v1/draws at the receiving node. Objective: 50 ms.")
ts("Draws within 50 ms, by node", [
    (f'sum by (node) (rate(geiger_http_request_duration_seconds_bucket{{job="geiger",{N},route="/v1/draws",method="POST",le="0.05"}}[5m])) / sum by (node) (rate(geiger_http_request_duration_seconds_count{{job="geiger",{N},route="/v1/draws",method="POST"}}[5m]))', "{{node}}"),
  ], unit="percentunit", maxv=1)
ts("Requests by route and status", [
    (f'sum by (route, status) (rate(geiger_http_requests_total{{job="geiger",{N}}}[5m]))', "{{route}} {{status}}"),
  ], unit="reqps", w=12)
ts("5xx by node", [
    (f'sum by (node, route) (rate(geiger_http_requests_total{{job="geiger",{N},status=~"5.."}}[5m]))', "{{node}} {{route}}"),
  ], unit="reqps", w=12)
ts("Draws by kind and outcome", [
    (f'sum by (kind, outcome) (rate(geiger_draws_total{{job="geiger",{N}}}[5m]))', "{{kind}} {{outcome}}"),
  ], unit="reqps", w=12, stack=True)
ts("Requests in flight", [
    (f'sum by (node) (geiger_http_requests_in_flight{{job="geiger",{N}}})', "{{node}}"),
  ], w=12)
endrow()

row("Raft")
ts("Role by node (1 = leader, 0.5 = follower, 0.25 = candidate, 0.1 = learner)", [
    (f'max by (node) ((geiger_raft_role{{job="geiger",{N},role="leader"}} == 1) * 1 or (geiger_raft_role{{job="geiger",{N},role="follower"}} == 1) * 0.5 or (geiger_raft_role{{job="geiger",{N},role="candidate"}} == 1) * 0.25 or (geiger_raft_role{{job="geiger",{N},role="learner"}} == 1) * 0.1)', "{{node}}"),
  ], minv=0, maxv=1)
ts("Term and leader id", [
    (f'max(geiger_raft_term{{job="geiger",{C}}})', "term"),
    (f'max by (node) (geiger_raft_leader_id{{job="geiger",{N}}})', "leader seen by {{node}}"),
  ])
ts("Leader changes and elections (per 15m)", [
    (f'max(increase(geiger_raft_leader_changes_total{{job="geiger",{C}}}[15m]))', "leader changes"),
    (f'sum by (node) (increase(geiger_raft_elections_total{{job="geiger",{N}}}[15m]))', "elections by {{node}}"),
  ], thresholds=[(4, "red")])
ts("Commit and applied index", [
    (f'max by (node) (geiger_raft_committed_index{{job="geiger",{N}}})', "committed {{node}}"),
    (f'max by (node) (geiger_raft_applied_index{{job="geiger",{N}}})', "applied {{node}}"),
  ])
ts("Replication lag (leader's view), seconds", [
    (f'max by (peer) (geiger_raft_replication_lag_seconds{{job="geiger",{C}}})', "peer {{peer}}"),
  ], unit="s", thresholds=[(10, "orange")])
ts("Replication lag, entries", [
    (f'max by (peer) (geiger_raft_replication_lag_entries{{job="geiger",{C}}})', "peer {{peer}}"),
  ])
ts("Voters: alive (Prometheus), reachable (leader), quorum", [
    (f'cluster:geiger_raft_voters_up:count{{{C}}}', "alive"),
    (f'max(geiger_raft_voters_reachable{{job="geiger",{C}}})', "reachable (leader)"),
    (f'cluster:geiger_raft_quorum:size{{{C}}}', "quorum"),
    (f'cluster:geiger_raft_voters:max{{{C}}}', "voters"),
  ], w=12)
ts("Snapshot index", [
    (f'max by (node) (geiger_raft_snapshot_index{{job="geiger",{N}}})', "{{node}}"),
  ], w=12)
endrow()

row("Links and entropy")
ts("Link up (cluster view)", [
    (f'cluster_device:geiger_link_up:max{{{C}}}', "{{device}}"),
  ], minv=0, maxv=1)
ts("Link owner", [
    (f'max by (device, node) (geiger_link_owned{{job="geiger",{C}}} == 1)', "{{device}} on {{node}}"),
  ], minv=0, maxv=1, desc="One line per (device, owner); a new line is a lease move.")
ts("Owner epoch", [
    (f'max by (device) (geiger_link_owner_epoch{{job="geiger",{C}}})', "{{device}}"),
  ])
ts("Chunks appended / s", [
    (f'sum by (device) (rate(geiger_entropy_chunks_appended_total{{job="geiger",{C}}}[5m]))', "{{device}}"),
  ], stack=True)
ts("Chunks quarantined (per 15m)", [
    (f'sum by (device, reason) (increase(geiger_entropy_chunks_quarantined_total{{job="geiger",{C}}}[15m]))', "{{device}} {{reason}}"),
  ])
ts("Health test failures (per 15m)", [
    (f'sum by (device, test) (increase(geiger_entropy_health_test_failures_total{{job="geiger",{C}}}[15m]))', "{{device}} {{test}}"),
  ], desc="A good device fails about one chunk every few minutes by design (docs/HEALTH.md).")
ts("Pool depth, bytes", [
    (f'max by (device) (geiger_pool_depth_bytes{{job="geiger",{C}}})', "{{device}}"),
  ], unit="bytes", stack=True)
ts("Pool time left", [
    (f'max by (device) (geiger_pool_depth_seconds{{job="geiger",{C}}})', "{{device}}"),
    (f'cluster:geiger_pool_depth_seconds:sum{{{C}}}', "whole pool"),
  ], unit="s", thresholds=[(600, "orange"), (1800, "green")], base="red")
ts("Pool inflow vs consumption", [
    (f'sum(max by (device) (rate(geiger_pool_appended_bytes_total{{job="geiger",{C}}}[5m])))', "appended"),
    (f'sum(max by (device) (rate(geiger_pool_consumed_bytes_total{{job="geiger",{C}}}[5m])))', "consumed"),
  ], unit="Bps")
ts("Link sessions (per 15m)", [
    (f'sum by (device, outcome) (increase(geiger_link_sessions_total{{job="geiger",{C}}}[15m]))', "{{device}} {{outcome}}"),
  ], w=12)
ts("Entropy received", [
    (f'sum by (device) (rate(geiger_link_received_bytes_total{{job="geiger",{C}}}[5m]))', "{{device}}"),
  ], unit="Bps", w=12)
ts("Last chunk age", [
    (f'time() - max by (device) (geiger_link_last_chunk_timestamp_seconds{{job="geiger",{C}}})', "{{device}}"),
  ], unit="s", w=12)
endrow()

row("Nodes and process")
ts("Up and ready by node", [
    (f'up{{job="geiger",{N}}}', "up {{node}}"),
    (f'geiger_node_ready{{job="geiger",{N}}}', "ready {{node}}"),
  ], minv=0, maxv=1)
ts("Actor restarts (per 15m)", [
    (f'sum by (node, actor) (increase(geiger_actor_restarts_total{{job="geiger",{N}}}[15m]))', "{{node}} {{actor}}"),
  ])
ts("Alert pushes (per 5m)", [
    (f'sum by (node, outcome) (increase(geiger_alert_pushes_total{{job="geiger",{N}}}[5m]))', "{{node}} {{outcome}}"),
    (f'sum by (alertname) (geiger_alerts_pushed_active{{job="geiger",{C}}})', "active {{alertname}}"),
  ])
ts("Scrape cost: samples per node", [
    (f'scrape_samples_scraped{{job="geiger",{N}}}', "{{node}}"),
  ])
ts("Scrape duration", [
    (f'scrape_duration_seconds{{job="geiger",{N}}}', "{{node}}"),
  ], unit="s")
ts("Uptime", [
    (f'time() - process_start_time_seconds{{job="geiger",{N}}}', "{{node}}"),
  ], unit="s")
ts("Disk free (node_exporter)", [
    (f'min by (node, mountpoint) (node_filesystem_avail_bytes{{job="node",{N},fstype!~"tmpfs|ramfs|overlay|squashfs"}} / node_filesystem_size_bytes{{job="node",{N},fstype!~"tmpfs|ramfs|overlay|squashfs"}})', "{{node}} {{mountpoint}}"),
  ], unit="percentunit", minv=0, maxv=1, thresholds=[(0.05, "orange"), (0.25, "green")], base="red", w=24,
  desc="Every node holds the whole ledger, so they fill together. Page under 5 %.")
table("Build info", f'geiger_build_info{{job="geiger",{N}}}', w=24, h=6,
      desc="Version skew across nodes shows here.")
endrow()

dash = {
  "title": "geiger",
  "uid": "geiger-cluster",
  "description": "geiger cluster: SLO, HTTP, Raft, links and entropy pool, nodes. Metrics: docs/METRICS.md; alerts: docs/RUNBOOK.md.",
  "tags": ["geiger"],
  "timezone": "utc",
  "schemaVersion": 37,
  "version": 1,
  "editable": True,
  "refresh": "30s",
  "time": {"from": "now-6h", "to": "now"},
  "graphTooltip": 1,
  "links": [],
  "annotations": {"list": [
    {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
     "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
    {"datasource": DS, "enable": True, "iconColor": "red", "name": "Pages (critical alerts firing)",
     "expr": 'ALERTS{alertstate="firing",severity="critical",cluster="$cluster"}',
     "titleFormat": "{{alertname}}", "textFormat": "{{zone}} {{node}} {{device}}", "step": "60s"}]},
  "templating": {"list": [
    {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
     "current": {}, "hide": 0, "refresh": 1},
    {"name": "cluster", "type": "query", "datasource": DS, "label": "cluster",
     "query": {"query": 'label_values(up{job="geiger"}, cluster)', "refId": "cluster"},
     "definition": 'label_values(up{job="geiger"}, cluster)', "refresh": 2, "current": {}, "hide": 0,
     "includeAll": False, "multi": False, "sort": 1},
    {"name": "zone", "type": "query", "datasource": DS, "label": "zone",
     "query": {"query": 'label_values(up{job="geiger",cluster="$cluster"}, zone)', "refId": "zone"},
     "definition": 'label_values(up{job="geiger",cluster="$cluster"}, zone)', "refresh": 2, "current": {},
     "hide": 0, "includeAll": True, "allValue": ".*", "multi": True, "sort": 1},
    {"name": "node", "type": "query", "datasource": DS, "label": "node",
     "query": {"query": 'label_values(up{job="geiger",cluster="$cluster",zone=~"$zone"}, node)', "refId": "node"},
     "definition": 'label_values(up{job="geiger",cluster="$cluster",zone=~"$zone"}, node)', "refresh": 2,
     "current": {}, "hide": 0, "includeAll": True, "allValue": ".*", "multi": True, "sort": 1},
  ]},
  "panels": panels,
}
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "geiger.json")
with open(out, "w") as f:
    json.dump(dash, f, indent=2)
    f.write("\n")
print(len(panels), "panels")
