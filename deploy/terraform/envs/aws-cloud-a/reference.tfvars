# The reference topology (deploy/README.md): cloud A on AWS. Replace the
# ARNs, the image, the release and the addresses with the real ones.
aws_region   = "eu-central-1"
cluster_name = "geiger-prod"
cloud        = "cloud-a"
region_label = "metro-1"
vpc_cidr     = "10.10.0.0/16"
zones = {
  "cloud-a-zone-1" = { availability_zone = "eu-central-1a", cidr = "10.10.1.0/24" }
  "cloud-a-zone-2" = { availability_zone = "eu-central-1b", cidr = "10.10.2.0/24" }
}
voters = [
  { id = 1, ip = "10.10.1.11", zone = "cloud-a-zone-1", cloud = "cloud-a", region = "metro-1" },
  { id = 2, ip = "10.10.2.11", zone = "cloud-a-zone-2", cloud = "cloud-a", region = "metro-1" },
  { id = 3, ip = "10.20.1.11", zone = "cloud-b-zone-1", cloud = "cloud-b", region = "metro-1" },
  { id = 4, ip = "10.20.2.11", zone = "cloud-b-zone-2", cloud = "cloud-b", region = "metro-1" },
  { id = 5, ip = "10.30.0.11", zone = "onprem", cloud = "onprem", region = "metro-1" },
]
operator_cidrs        = ["10.10.1.30/32", "10.20.1.30/32", "10.30.0.0/24"]
peer_site_cidrs       = ["198.51.100.20/32", "198.51.100.21/32", "203.0.113.50/32"]
alertmanagers         = ["http://10.10.1.30:9093", "http://10.20.1.30:9093"]
ami_id                = "ami-0123456789abcdef0"
learners_per_zone     = 1
learners_max_per_zone = 4
release_url           = "https://releases.geiger.example/geiger-x86_64-linux"
release_sha256        = "0000000000000000000000000000000000000000000000000000000000000000"
certificate_arn       = "arn:aws:acm:eu-central-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
paging_endpoint       = "https://events.pagerduty.com/integration/REPLACE/enqueue"
hosted_zone_id        = "Z0123456789EXAMPLE"
public_name           = "api.geiger.example"
dns_ttl               = 30
other_edges = {
  "cloud-b" = ["198.51.100.10"] # the GCP global load balancer (envs/gcp-cloud-b output edge_ip)
  "onprem"  = ["203.0.113.10"]  # the on-prem HAProxy VIP (deploy/onprem/keepalived.conf)
}
