#!/usr/bin/env python3
"""Applies deploy/terraform/envs/aws-cloud-a for real against moto, then destroys it.

moto (a fake AWS from PyPI) runs as a server on a free loopback port; the
environment is copied to a scratch directory with a provider override that
points every AWS service it uses at that port. The run:

1. creates what the environment takes as given (the Route 53 hosted zone,
   the ACM certificate) and picks an image moto knows;
2. `terraform apply` with the reference variables: every resource must be
   created without error;
3. `terraform destroy` must be REFUSED: the voters' data volumes carry
   `prevent_destroy`;
4. in the scratch copy only, `prevent_destroy` is turned off, and
   `terraform destroy` must remove everything.

It prints the resources created by type, the times, and writes the
environment's outputs (the rendered node configs) to OUT/outputs.json for
test_topology.py. Exit code 0 only when every step did what it must.
"""

import argparse
import collections
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
ENV = "envs/aws-cloud-a"
SERVICES = ["acm", "autoscaling", "cloudwatch", "ec2", "elbv2", "iam", "kms",
            "route53", "secretsmanager", "sns", "sts"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, cwd, env, log):
    started = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.call(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return code, time.monotonic() - started


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "target/deploy-cloud-check/moto"))
    ap.add_argument("--tf-cli-config", default=os.environ.get("TF_CLI_CONFIG_FILE", ""))
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    import boto3  # moto's own dependency

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(out / "moto.log", "w"), stderr=subprocess.STDOUT)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="geiger-moto-"))
    ok = True
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            print("FAIL moto server did not start")
            return 1

        tfvars = (REPO / "deploy/terraform" / ENV / "reference.tfvars").read_text()
        region = re.search(r'aws_region\s*=\s*"([^"]+)"', tfvars).group(1)
        kw = dict(endpoint_url=endpoint, region_name=region,
                  aws_access_key_id="testing", aws_secret_access_key="testing")
        zone = boto3.client("route53", **kw).create_hosted_zone(
            Name="geiger.example", CallerReference=str(time.time()))["HostedZone"]["Id"].split("/")[-1]
        cert = boto3.client("acm", **kw).request_certificate(DomainName="api.geiger.example")["CertificateArn"]
        ami = boto3.client("ec2", **kw).describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

        shutil.copytree(REPO / "deploy", scratch / "deploy")
        envdir = scratch / "deploy/terraform" / ENV
        endpoints = "\n".join(f'    {s} = "{endpoint}"' for s in SERVICES)
        (envdir / "moto_override.tf").write_text(f"""provider "aws" {{
  region                      = var.aws_region
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  max_retries                 = 2
  endpoints {{
{endpoints}
  }}
}}
""")
        (envdir / "moto.tfvars").write_text(
            f'hosted_zone_id = "{zone}"\nami_id = "{ami}"\ncertificate_arn = "{cert}"\n'
            "lb_deletion_protection = false\n"
            # moto 5.2 lacks MonitorInstances (the provider retries it until
            # its timeout): the only setting the fake run changes.
            "detailed_monitoring = false\n")

        env = dict(os.environ, TF_IN_AUTOMATION="1", TF_DATA_DIR=str(scratch / "tfdata"))
        if args.tf_cli_config:
            env["TF_CLI_CONFIG_FILE"] = args.tf_cli_config
        varfiles = ["-var-file=reference.tfvars", "-var-file=moto.tfvars"]

        code, _ = run(["terraform", "init", "-input=false", "-no-color"], envdir, env, out / "init.log")
        if code:
            print(f"FAIL terraform init (see {out}/init.log)")
            return 1

        code, took = run(["terraform", "apply", "-auto-approve", "-input=false", "-no-color",
                          "-parallelism=20", *varfiles], envdir, env, out / "apply.log")
        state = json.loads(subprocess.check_output(["terraform", "show", "-json"], cwd=envdir, env=env))
        managed = []

        def walk(mod):
            for r in mod.get("resources", []):
                if r["mode"] == "managed":
                    managed.append(r["type"])
            for c in mod.get("child_modules", []):
                walk(c)
        walk(state.get("values", {}).get("root_module", {}))
        counts = collections.Counter(managed)
        errors = [l for l in (out / "apply.log").read_text().splitlines() if l.startswith("Error:")]
        print(f"apply: {len(managed)} resources of {len(counts)} types in {took:.1f} s, exit {code}")
        for t, n in sorted(counts.items()):
            print(f"  {n:3d} {t}")
        if code or errors:
            ok = False
            print(f"FAIL terraform apply against moto (see {out}/apply.log):")
            for e in errors:
                print("  " + e)
        else:
            print("ok   terraform apply against moto: every resource created")
        subprocess.run(["terraform", "output", "-json"], cwd=envdir, env=env,
                       stdout=open(out / "outputs.json", "w"), check=False)
        summary_note = ""
        summary = {"resources": len(managed), "types": dict(counts), "apply_seconds": round(took, 1)}

        code, took = run(["terraform", "destroy", "-auto-approve", "-input=false", "-no-color", *varfiles],
                         envdir, env, out / "destroy-refused.log")
        refused = code != 0 and "prevent_destroy" in (out / "destroy-refused.log").read_text()
        if refused:
            print("ok   terraform destroy refused: the voters' data volumes have prevent_destroy")
        else:
            ok = False
            print(f"FAIL terraform destroy was not refused by prevent_destroy (see {out}/destroy-refused.log)")

        voter = envdir.parent.parent / "modules/aws-voter/main.tf"
        voter.write_text(voter.read_text().replace("prevent_destroy = true", "prevent_destroy = false"))
        code, took = run(["terraform", "destroy", "-auto-approve", "-input=false", "-no-color", *varfiles],
                         envdir, env, out / "destroy.log")
        # moto 5.2.1 keeps a separately created primary network interface
        # attached to its terminated instance (EC2 detaches it at
        # termination), so deleting the interface fails with "cannot be
        # detached", and what it sits in (subnet, security group, VPC) is
        # left too. Only that error, on aws_network_interface only, is taken
        # as moto's: said aloud, the interfaces are removed from the state
        # and destroy runs again for the rest. Any other error fails the run.
        log = (out / "destroy.log").read_text()
        errs = [l for l in log.splitlines() if l.startswith("Error:")]
        moto_eni = [e for e in errs if e.startswith("Error: detaching EC2 Network Interface")]
        if code and errs and len(moto_eni) == len(errs) and "cannot be detached" in log:
            listed = subprocess.check_output(["terraform", "state", "list"], cwd=envdir, env=env, text=True).split()
            enis = [a for a in listed if ".aws_network_interface." in a]
            subprocess.check_call(["terraform", "state", "rm", *enis], cwd=envdir, env=env,
                                  stdout=subprocess.DEVNULL)
            print(f"NOTE moto limitation: {len(enis)} aws_network_interface not deletable in moto "
                  "(it keeps the primary interface attached to the terminated instance); "
                  "removed from the state: " + ", ".join(enis))
            summary_note = f"{len(enis)} aws_network_interface left to moto (moto limitation)"
            code, took2 = run(["terraform", "destroy", "-auto-approve", "-input=false", "-no-color", *varfiles],
                              envdir, env, out / "destroy-2.log")
            took += took2
        left_n = len(subprocess.check_output(["terraform", "state", "list"], cwd=envdir, env=env,
                                             text=True).split())
        print(f"destroy (prevent_destroy lifted in the scratch copy): {took:.1f} s, exit {code}, "
              f"{left_n} left in state")
        if code or left_n:
            ok = False
            print(f"FAIL terraform destroy against moto (see {out}/destroy.log)")
        else:
            print("ok   terraform destroy against moto: everything removed")
        summary["destroy_seconds"] = round(took, 1)
        summary["note"] = summary_note
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        return 0 if ok else 1
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
