# Cloud B of the reference topology (deploy/README.md) on GCP: voters 3 and
# 4 in two zones, a learner group per zone behind a global proxy load
# balancer checking /readyz, the firewall rules and the alarms. Its edge
# address goes into envs/aws-cloud-a's other_edges (the one public name).

locals {
  voters_here = { for v in var.voters : v.zone => v if v.cloud == var.cloud }
}

module "network" {
  source          = "../../modules/gcp-network"
  name            = "${var.cluster_name}-${var.cloud}"
  gcp_region      = var.gcp_region
  zones           = var.zones
  operator_cidrs  = var.operator_cidrs
  peer_site_cidrs = var.peer_site_cidrs
}

resource "google_service_account" "node" {
  account_id   = "${var.cluster_name}-node"
  display_name = "geiger node"
}

# secrets.env: the value is added by the operator (gcloud secrets versions add).
resource "google_secret_manager_secret" "node" {
  secret_id = "${var.cluster_name}-${var.cloud}-secrets-env"
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_iam_member" "node" {
  secret_id = google_secret_manager_secret.node.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.node.email}"
}

module "voter" {
  source                = "../../modules/gcp-voter"
  for_each              = local.voters_here
  node_id               = each.value.id
  private_ip            = each.value.ip
  zone                  = each.value.zone
  cloud                 = each.value.cloud
  region                = each.value.region
  gcp_region            = var.gcp_region
  gcp_zone              = var.zones[each.key].gcp_zone
  subnet_id             = module.network.subnet_ids[each.key]
  service_account_email = google_service_account.node.email
  cluster_name          = var.cluster_name
  alertmanagers         = var.alertmanagers
  bootstrap             = var.voters
  release_url           = var.release_url
  release_sha256        = var.release_sha256
  secret_id             = google_secret_manager_secret.node.secret_id
}

module "edge" {
  source                = "../../modules/gcp-edge"
  name                  = "${var.cluster_name}-${var.cloud}"
  zones                 = { for k, z in var.zones : k => { gcp_zone = z.gcp_zone, subnet_id = module.network.subnet_ids[k] } }
  voter_instance_groups = [for v in module.voter : v.instance_group]
  voter_ips             = [for v in local.voters_here : v.ip]
  ssl_certificate_id    = var.ssl_certificate_id
  learners_per_zone     = var.learners_per_zone
  service_account_email = google_service_account.node.email
  cluster_name          = var.cluster_name
  cloud                 = var.cloud
  region                = var.region_label
  alertmanagers         = var.alertmanagers
  release_url           = var.release_url
  release_sha256        = var.release_sha256
  secret_id             = google_secret_manager_secret.node.secret_id
}

module "alarms" {
  source          = "../../modules/gcp-alarms"
  name            = "${var.cluster_name}-${var.cloud}"
  paging_endpoint = var.paging_endpoint
  backend_service = module.edge.backend_service
}
