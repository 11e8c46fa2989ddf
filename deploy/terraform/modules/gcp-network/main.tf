# Cloud B of the reference topology on GCP: a VPC with a subnet per zone
# (GCP subnets are regional, so one per zone label keeps the addressing of
# deploy/README.md) and the firewall rules per role.

resource "google_compute_network" "this" {
  name                    = var.name
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "zone" {
  for_each                 = var.zones
  name                     = "${var.name}-${each.key}"
  network                  = google_compute_network.this.id
  region                   = var.gcp_region
  ip_cidr_range            = each.value.cidr
  private_ip_google_access = true
  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Only Google's front ends (the global proxy load balancer and its health
# checkers) reach the nodes' API from outside: the public 443 ends at the
# load balancer, not on the nodes.
resource "google_compute_firewall" "api_from_load_balancer" {
  name          = "${var.name}-api-from-lb"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = ["130.211.0.0/22", "35.191.0.0/16"]
  target_tags   = ["geiger-node"]
  allow {
    protocol = "tcp"
    ports    = ["8080"]
  }
}

resource "google_compute_firewall" "members" {
  name        = "${var.name}-members"
  network     = google_compute_network.this.id
  direction   = "INGRESS"
  source_tags = ["geiger-node"]
  target_tags = ["geiger-node"]
  allow {
    protocol = "tcp"
    ports    = ["8080", "9080"]
  }
}

resource "google_compute_firewall" "operators" {
  name          = "${var.name}-operators"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = var.operator_cidrs
  target_tags   = ["geiger-node"]
  allow {
    protocol = "tcp"
    ports    = ["8080"]
  }
}

resource "google_compute_firewall" "wireguard" {
  name          = "${var.name}-wireguard"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = var.peer_site_cidrs
  target_tags   = ["geiger-node"]
  allow {
    protocol = "udp"
    ports    = ["51820"]
  }
}

# Nothing else comes in (GCP's implied rule denies ingress; this makes it
# explicit and logged).
resource "google_compute_firewall" "deny_rest" {
  name          = "${var.name}-deny-rest"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  priority      = 65000
  source_ranges = ["0.0.0.0/0"]
  deny {
    protocol = "all"
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
