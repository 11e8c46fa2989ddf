# The reference topology (deploy/README.md): cloud B on GCP.
project      = "geiger-prod-example"
gcp_region   = "europe-west3"
cluster_name = "geiger-prod"
cloud        = "cloud-b"
region_label = "metro-1"
zones = {
  "cloud-b-zone-1" = { gcp_zone = "europe-west3-a", cidr = "10.20.1.0/24" }
  "cloud-b-zone-2" = { gcp_zone = "europe-west3-b", cidr = "10.20.2.0/24" }
}
voters = [
  { id = 1, ip = "10.10.1.11", zone = "cloud-a-zone-1", cloud = "cloud-a", region = "metro-1" },
  { id = 2, ip = "10.10.2.11", zone = "cloud-a-zone-2", cloud = "cloud-a", region = "metro-1" },
  { id = 3, ip = "10.20.1.11", zone = "cloud-b-zone-1", cloud = "cloud-b", region = "metro-1" },
  { id = 4, ip = "10.20.2.11", zone = "cloud-b-zone-2", cloud = "cloud-b", region = "metro-1" },
  { id = 5, ip = "10.30.0.11", zone = "onprem", cloud = "onprem", region = "metro-1" },
]
operator_cidrs     = ["10.10.1.30/32", "10.20.1.30/32", "10.30.0.0/24"]
peer_site_cidrs    = ["198.51.100.30/32", "198.51.100.31/32", "203.0.113.50/32"]
alertmanagers      = ["http://10.10.1.30:9093", "http://10.20.1.30:9093"]
learners_per_zone  = 1
release_url        = "https://releases.geiger.example/geiger-x86_64-linux"
release_sha256     = "0000000000000000000000000000000000000000000000000000000000000000"
ssl_certificate_id = "projects/geiger-prod-example/global/sslCertificates/api-geiger-example"
paging_endpoint    = "https://events.pagerduty.com/integration/REPLACE/enqueue"
