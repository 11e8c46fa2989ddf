#!/usr/bin/env python3
"""A stand-in for a geiger node's /metrics, following docs/METRICS.md, for
rehearsing the monitoring stack before the real node exists (and for
checking the rules against a real Prometheus). Not a test of the node.

Serves Prometheus text on 127.0.0.1:PORT/metrics: a healthy member of a
3-voter cluster, with steady fast draw traffic, device links owned by the
leader, and a full entropy pool.

Usage: fake_node.py PORT NODE_ID LEADER_ID [DEVICES]
  (role is leader when NODE_ID == LEADER_ID; DEVICES comma-separated, default d1)
"""
import http.server, sys, time

port, node_id, leader_id = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
devices = (sys.argv[4] if len(sys.argv) > 4 else "d1").split(",")
start = time.time()
is_leader = node_id == leader_id
BUCKETS = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]

def render():
    t = time.time() - start
    draws = int(t * 10)  # 10 draws/s, all answered 201 within 5 ms
    out = []
    def m(line):
        out.append(line)
    m("# TYPE geiger_http_requests_total counter")
    m('geiger_http_requests_total{route="/v1/draws",method="POST",status="201"} %d' % draws)
    m("# TYPE geiger_http_request_duration_seconds histogram")
    for le in BUCKETS:
        v = 0 if float(le.replace("+Inf", "inf")) < 0.005 else draws
        m('geiger_http_request_duration_seconds_bucket{route="/v1/draws",method="POST",status_class="2xx",le="%s"} %d' % (le, v))
    m('geiger_http_request_duration_seconds_count{route="/v1/draws",method="POST",status_class="2xx"} %d' % draws)
    m('geiger_http_request_duration_seconds_sum{route="/v1/draws",method="POST",status_class="2xx"} %f' % (draws * 0.004))
    m("# TYPE geiger_draws_total counter")
    m('geiger_draws_total{kind="integers",outcome="created"} %d' % draws)
    m("# TYPE geiger_raft_role gauge")
    for role in ("leader", "follower", "candidate", "learner", "shutdown"):
        mine = "leader" if is_leader else "follower"
        m('geiger_raft_role{role="%s"} %d' % (role, 1 if role == mine else 0))
    m("geiger_raft_term 3")
    m("geiger_raft_leader_id %d" % leader_id)
    m("geiger_raft_voters 3")
    if is_leader:
        m("geiger_raft_voters_reachable 3")
        for peer in (1, 2, 3):
            if peer != node_id:
                m('geiger_raft_replication_lag_seconds{peer="%d"} 0' % peer)
                m('geiger_raft_replication_lag_entries{peer="%d"} 0' % peer)
    m("geiger_raft_committed_index %d" % (1000 + draws))
    m("geiger_raft_applied_index %d" % (1000 + draws))
    m("# TYPE geiger_raft_elections_total counter")
    m("geiger_raft_elections_total 0")
    m("# TYPE geiger_raft_leader_changes_total counter")
    m("geiger_raft_leader_changes_total 1")
    for d in devices:
        m('geiger_link_up{device="%s"} %d' % (d, 1 if is_leader else 0))
        m('geiger_link_owned{device="%s"} %d' % (d, 1 if is_leader else 0))
        m('geiger_link_owner_epoch{device="%s"} 7' % d)
        m('geiger_pool_depth_bytes{device="%s"} 100000000' % d)
        m('geiger_pool_depth_seconds{device="%s"} 7200' % d)
        if is_leader:
            m('geiger_entropy_chunks_appended_total{device="%s"} %d' % (d, int(t * 8)))
            m('geiger_entropy_chunks_quarantined_total{device="%s",reason="health_test"} 0' % d)
            for test in ("repetition_count", "adaptive_proportion", "bit_proportion"):
                m('geiger_entropy_health_test_failures_total{device="%s",test="%s"} 0' % (d, test))
    m('geiger_actor_restarts_total{actor="hardware_session"} 0')
    m("geiger_node_ready 1")
    m('geiger_node_info{node_id="%d"} 1' % node_id)
    m('geiger_build_info{version="0.0.0-fake",git_commit="none",rustc_version="none",profile="fake"} 1')
    if is_leader:
        m('geiger_alert_pushes_total{outcome="ok"} %d' % int(t / 15))
        m('geiger_alert_pushes_total{outcome="error"} 0')
    m("process_start_time_seconds %f" % start)
    return ("\n".join(out) + "\n").encode()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/metrics":
            self.send_response(404); self.end_headers(); return
        body = render()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
