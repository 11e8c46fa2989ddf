"""The reference topology's promises, read from the parsed Terraform
(python-hcl2) and the rendered Kubernetes manifests (kubectl kustomize).

Run from the repository root: python3 -m unittest deploy/tests/test_topology.py
(deploy/cloud-check runs it). With GEIGER_MOTO_OUTPUTS pointing at the
outputs.json of deploy/tests/moto_apply.py it also compares the node configs
Terraform rendered with the on-prem examples.
"""

import collections
import glob
import ipaddress
import json
import os
import pathlib
import re
import subprocess
import tomllib
import unittest

import hcl2
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
TF = REPO / "deploy/terraform"
K8S = REPO / "deploy/k8s"
ONPREM = REPO / "deploy/onprem/config"
PUBLIC_API_PORTS = {443}
VAR_REF = re.compile(r"^\$\{var\.([a-z0-9_]+)\}$")


def scalar(x):
    """python-hcl2 (8.x) wraps every attribute value in a one-element list."""
    if isinstance(x, list) and len(x) == 1:
        return x[0]
    return x


def as_list(x):
    x = scalar(x)
    return x if isinstance(x, list) else [x]


def parse_dir(d: pathlib.Path) -> dict:
    merged = collections.defaultdict(list)
    for f in sorted(d.glob("*.tf")):
        with open(f) as fh:
            for k, v in hcl2.load(fh).items():
                merged[k].extend(v)
    return merged


def resources(parsed: dict, rtype: str) -> dict:
    out = {}
    for block in parsed.get("resource", []):
        for t, named in block.items():
            if t == rtype:
                out.update(named)
    return out


def variable_defaults(parsed: dict) -> dict:
    out = {}
    for block in parsed.get("variable", []):
        for name, body in block.items():
            if "default" in body:
                out[name] = scalar(body["default"])
    return out


def tfvars(env: str) -> dict:
    with open(TF / "envs" / env / "reference.tfvars") as fh:
        return {k: scalar(v) for k, v in hcl2.load(fh).items()}


def resolve(value, defaults: dict, given: dict):
    """A module attribute that is just `var.x`: the value the environment gives, else the default."""
    value = scalar(value)
    if isinstance(value, str):
        m = VAR_REF.match(value)
        if m:
            name = m.group(1)
            return given.get(name, defaults.get(name))
    return value


def world(cidrs) -> bool:
    return any(str(c) in ("0.0.0.0/0", "::/0") for c in as_list(cidrs))


def world_open_ports(rules: dict, defaults: dict, given: dict) -> set:
    """Ports an AWS security group lets in from anywhere."""
    ports = set()
    for body in rules.values():
        if scalar(body["type"]) != "ingress":
            continue
        cidrs = as_list(resolve(body.get("cidr_blocks", []), defaults, given) or [])
        cidrs += as_list(resolve(body.get("ipv6_cidr_blocks", []), defaults, given) or [])
        if world(cidrs):
            lo, hi = int(scalar(body["from_port"])), int(scalar(body["to_port"]))
            ports.update(range(lo, hi + 1))
    return ports


def kustomize(overlay: str) -> list:
    out = subprocess.check_output(["kubectl", "kustomize", str(K8S / "overlays" / overlay)], text=True)
    return [d for d in yaml.safe_load_all(out) if d]


def majority_holders(voters: list, key: str) -> list:
    counts = collections.Counter(v[key] for v in voters)
    return [d for d, n in counts.items() if n > len(voters) // 2]


class TheCheckersCanFail(unittest.TestCase):
    """The helpers below must see a broken topology, or the promises prove nothing."""

    def test_a_rule_open_to_the_world_on_the_internal_port_is_seen(self):
        rules = {"bad": {"type": ["ingress"], "from_port": [9080], "to_port": [9080],
                         "cidr_blocks": ["${var.x}"]}}
        self.assertEqual(world_open_ports(rules, {"x": ["0.0.0.0/0"]}, {}), {9080})

    def test_three_voters_in_one_cloud_are_a_majority_holder(self):
        voters = [{"cloud": c} for c in ["a", "a", "a", "b", "c"]]
        self.assertEqual(majority_holders(voters, "cloud"), ["a"])


class TerraformReferenceTopology(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.aws = tfvars("aws-cloud-a")
        cls.gcp = tfvars("gcp-cloud-b")
        cls.voters = cls.aws["voters"]
        with open(ONPREM / "node-1-voter-cloud-a-zone-1.toml", "rb") as fh:
            cls.onprem_bootstrap = tomllib.load(fh)["bootstrap"]

    def test_there_are_five_voters_and_every_site_agrees_on_them(self):
        self.assertEqual(len(self.voters), 5)
        self.assertEqual(len({v["id"] for v in self.voters}), 5)
        self.assertEqual(self.voters, self.gcp["voters"], "AWS and GCP envs name other voters")
        onprem = [{"id": b["id"], "ip": b["api_addr"].split(":")[0], "zone": b["zone"],
                   "cloud": b["cloud"], "region": b["region"]} for b in self.onprem_bootstrap]
        self.assertEqual(self.voters, onprem, "the envs and deploy/onprem/config disagree on the voters")

    def test_no_failure_domain_holds_a_majority(self):
        for key in ("cloud", "zone", "ip"):
            self.assertEqual(majority_holders(self.voters, key), [], f"a {key} holds a majority")
        per_cloud = collections.Counter(v["cloud"] for v in self.voters)
        self.assertEqual(sorted(per_cloud.values()), [1, 2, 2])

    def test_each_env_runs_the_voters_of_its_own_cloud_in_zones_it_has(self):
        for env, given in (("aws-cloud-a", self.aws), ("gcp-cloud-b", self.gcp)):
            here = [v for v in self.voters if v["cloud"] == given["cloud"]]
            self.assertEqual(len(here), 2, env)
            self.assertEqual({v["zone"] for v in here}, set(given["zones"]), env)
            for v in here:
                net = ipaddress.ip_network(given["zones"][v["zone"]]["cidr"])
                self.assertIn(ipaddress.ip_address(v["ip"]), net, f"{env}: voter {v['id']} outside its zone's subnet")

    def test_every_voter_has_its_own_encrypted_kept_volume(self):
        voter = parse_dir(TF / "modules/aws-voter")
        vols = resources(voter, "aws_ebs_volume")
        self.assertEqual(list(vols), ["data"])
        body = vols["data"]
        self.assertNotIn("count", body)
        self.assertNotIn("for_each", body)
        self.assertIs(scalar(body["encrypted"]), True)
        self.assertIs(scalar(body["lifecycle"][0]["prevent_destroy"]), True)
        self.assertEqual(len(resources(voter, "aws_volume_attachment")), 1)
        self.assertEqual(len(resources(voter, "aws_network_interface")), 1, "a fixed interface per voter")
        gvoter = parse_dir(TF / "modules/gcp-voter")
        disks = resources(gvoter, "google_compute_disk")
        self.assertEqual(list(disks), ["data"])
        self.assertIs(scalar(disks["data"]["lifecycle"][0]["prevent_destroy"]), True)
        # One module instance per voter of the site.
        for env in ("aws-cloud-a", "gcp-cloud-b"):
            mods = {}
            for block in parse_dir(TF / "envs" / env).get("module", []):
                mods.update(block)
            self.assertEqual(scalar(mods["voter"]["for_each"]), "${local.voters_here}", env)

    def test_every_health_check_is_on_readyz(self):
        checks = []
        for d in sorted((TF / "modules").iterdir()):
            parsed = parse_dir(d)
            for tg in resources(parsed, "aws_lb_target_group").values():
                checks.append((d.name, scalar(tg["health_check"][0]["path"])))
            for hc in resources(parsed, "aws_route53_health_check").values():
                checks.append((d.name, scalar(hc["resource_path"])))
            for hc in resources(parsed, "google_compute_health_check").values():
                checks.append((d.name, scalar(hc["http_health_check"][0]["request_path"])))
            for mig in resources(parsed, "google_compute_instance_group_manager").values():
                self.assertIn("readyz", scalar(mig["auto_healing_policies"][0]["health_check"]))
            for bs in resources(parsed, "google_compute_backend_service").values():
                self.assertIn("readyz", str(bs["health_checks"]))
        self.assertGreaterEqual(len(checks), 3)
        self.assertEqual({p for _, p in checks}, {"/readyz"}, checks)

    def test_dns_ttl_is_at_most_a_minute(self):
        dns = parse_dir(TF / "modules/dns-route53")
        defaults = variable_defaults(dns)
        given = {"ttl": self.aws.get("dns_ttl")} if "dns_ttl" in self.aws else {}
        records = resources(dns, "aws_route53_record")
        self.assertTrue(records)
        for r in records.values():
            ttl = resolve(r["ttl"], defaults, given)
            self.assertLessEqual(int(ttl), 60)
            self.assertIs(scalar(r["multivalue_answer_routing_policy"]), True)
            self.assertIn("aws_route53_health_check", str(r["health_check_id"]))
        self.assertLessEqual(int(variable_defaults(parse_dir(TF / "envs/aws-cloud-a"))["dns_ttl"]), 60)
        self.assertEqual(set(self.aws["other_edges"]), {"cloud-b", "onprem"}, "the name spans all three edges")

    def test_no_port_is_open_to_the_world_but_the_public_api(self):
        sec = parse_dir(TF / "modules/aws-security")
        given = {k: self.aws[k] for k in ("operator_cidrs", "peer_site_cidrs") if k in self.aws}
        rules = resources(sec, "aws_security_group_rule")
        self.assertEqual(world_open_ports(rules, variable_defaults(sec), given), PUBLIC_API_PORTS)
        for env in (self.aws, self.gcp):
            for k in ("operator_cidrs", "peer_site_cidrs"):
                self.assertFalse(world(env[k]), k)
        gnet = parse_dir(TF / "modules/gcp-network")
        for name, fw in resources(gnet, "google_compute_firewall").items():
            if "allow" in fw and world(fw.get("source_ranges", [])):
                self.fail(f"GCP firewall {name} allows the world")
        # The public 443 on GCP is the global forwarding rule, nothing else.
        gedge = parse_dir(TF / "modules/gcp-edge")
        for fr in resources(gedge, "google_compute_global_forwarding_rule").values():
            self.assertEqual(str(scalar(fr["port_range"])), "443")
        aedge = parse_dir(TF / "modules/aws-edge")
        self.assertEqual({int(scalar(l["port"])) for l in resources(aedge, "aws_lb_listener").values()},
                         PUBLIC_API_PORTS)


class KubernetesManifests(unittest.TestCase):
    OVERLAYS = ("eks", "gke", "kubeadm")

    @classmethod
    def setUpClass(cls):
        cls.rendered = {o: kustomize(o) for o in cls.OVERLAYS}

    def of_kind(self, overlay, kind):
        return [d for d in self.rendered[overlay] if d["kind"] == kind]

    def test_five_voters_spread_so_no_zone_holds_a_majority(self):
        for o in self.OVERLAYS:
            (sts,) = self.of_kind(o, "StatefulSet")
            spec = sts["spec"]
            self.assertEqual(spec["replicas"], 5, o)
            zone = [c for c in spec["template"]["spec"]["topologySpreadConstraints"]
                    if c["topologyKey"] == "topology.kubernetes.io/zone"]
            self.assertEqual(len(zone), 1, o)
            self.assertEqual(zone[0]["maxSkew"], 1, o)
            self.assertEqual(zone[0]["whenUnsatisfiable"], "DoNotSchedule", o)
            # maxSkew 1 over z >= 3 zones puts at most ceil(5 / z) <= 2 voters in a zone.
            self.assertLessEqual(-(-5 // 3), 5 // 2)

    def test_every_voter_pod_has_its_own_persistent_volume_at_the_data_dir(self):
        for o in self.OVERLAYS:
            (sts,) = self.of_kind(o, "StatefulSet")
            (claim,) = sts["spec"]["volumeClaimTemplates"]
            self.assertEqual(claim["spec"]["accessModes"], ["ReadWriteOnce"], o)
            self.assertIn("storageClassName", claim["spec"], o)
            mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
            self.assertIn({"name": claim["metadata"]["name"], "mountPath": "/var/lib/geiger"}, mounts, o)
            self.assertEqual(sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"], "Retain", o)
            (sc,) = self.of_kind(o, "StorageClass")
            self.assertEqual(sc["reclaimPolicy"], "Retain", o)

    def test_probes_pdb_and_peer_service(self):
        for o in self.OVERLAYS:
            (sts,) = self.of_kind(o, "StatefulSet")
            c = sts["spec"]["template"]["spec"]["containers"][0]
            self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz", o)
            self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz", o)
            (pdb,) = self.of_kind(o, "PodDisruptionBudget")
            self.assertEqual(pdb["spec"]["maxUnavailable"], 1, o)
            peers = [s for s in self.of_kind(o, "Service") if s["spec"].get("clusterIP") == "None"]
            self.assertEqual(len(peers), 1, o)
            self.assertIs(peers[0]["spec"]["publishNotReadyAddresses"], True, o)
            self.assertEqual(sts["spec"]["serviceName"], peers[0]["metadata"]["name"], o)

    def test_every_load_balancer_health_check_is_on_readyz(self):
        for s in self.of_kind("eks", "Service"):
            if s["spec"].get("type") == "LoadBalancer":
                ann = s["metadata"]["annotations"]
                self.assertEqual(ann["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"], "/readyz")
        # GKE takes the Ingress backend's health check from the readiness probe.
        self.assertTrue(self.of_kind("gke", "Ingress"))

    def test_only_the_public_api_is_exposed_outside_the_cluster(self):
        for o in self.OVERLAYS:
            for s in self.of_kind(o, "Service"):
                if s["spec"].get("type") == "LoadBalancer":
                    self.assertEqual({p["port"] for p in s["spec"]["ports"]}, PUBLIC_API_PORTS, o)
                if s["spec"].get("type") == "NodePort":
                    # kubeadm: the on-prem HAProxy's backend; the API port only.
                    self.assertEqual({p["targetPort"] for p in s["spec"]["ports"]}, {"api"}, o)
            for ing in self.of_kind(o, "Ingress"):
                self.assertTrue(ing["spec"]["tls"], o)
                self.assertEqual(ing["metadata"]["annotations"]["kubernetes.io/ingress.allow-http"], "false")
            (np,) = self.of_kind(o, "NetworkPolicy")
            for rule in np["spec"]["ingress"]:
                ports = {p["port"] for p in rule["ports"]}
                if "from" not in rule:
                    self.assertEqual(ports, {8080}, f"{o}: only the API port is open to any source")


class RenderedNodeConfigs(unittest.TestCase):
    def test_terraform_renders_the_same_node_config_as_the_onprem_examples(self):
        path = os.environ.get("GEIGER_MOTO_OUTPUTS")
        if not path or not os.path.exists(path):
            self.skipTest("no outputs.json of deploy/tests/moto_apply.py (GEIGER_MOTO_OUTPUTS)")
        with open(path) as fh:
            rendered = json.load(fh)["voter_node_toml"]["value"]
        self.assertEqual(len(rendered), 2)
        for zone, text in rendered.items():
            (example,) = glob.glob(str(ONPREM / f"node-*-voter-{zone}.toml"))
            with open(example, "rb") as fh:
                want = tomllib.load(fh)
            self.assertEqual(tomllib.loads(text), want, zone)


if __name__ == "__main__":
    unittest.main()
