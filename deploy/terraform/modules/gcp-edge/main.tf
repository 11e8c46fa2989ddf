# Cloud B's edge: a global external proxy load balancer (TLS on 443 ends at
# Google's front ends, which connect to the nodes' 8080), one backend
# service over every node of the site, health-checked on /readyz; and the
# learners, one managed instance group per zone, auto-healed on the same
# check.

resource "google_compute_global_address" "edge" {
  name = "${var.name}-edge"
}

resource "google_compute_health_check" "readyz" {
  name                = "${var.name}-readyz"
  check_interval_sec  = 5
  timeout_sec         = 4
  healthy_threshold   = 2
  unhealthy_threshold = 2
  http_health_check {
    port         = 8080
    request_path = "/readyz"
  }
  log_config {
    enable = true
  }
}

locals {
  learner_user_data = { for zone, z in var.zones : zone => templatefile("${path.module}/../../templates/cloud-init.yaml.tftpl", {
    node_toml = templatefile("${path.module}/../../templates/node.toml.tftpl", {
      node_id       = "@NODE_ID@"
      listen_ip     = "@LOCAL_IP@"
      cluster_name  = var.cluster_name
      zone          = zone
      cloud         = var.cloud
      region        = var.region
      alertmanagers = var.alertmanagers
      bootstrap     = []
    })
    unit = file("${path.module}/../../../onprem/geiger.service")
    boot_script = templatefile("${path.module}/../../templates/boot.sh.tftpl", {
      data_device     = ""
      release_url     = var.release_url
      release_sha256  = var.release_sha256
      instance_id_cmd = "curl -fs -H 'Metadata-Flavor: Google' http://metadata.google.internal/computeMetadata/v1/instance/id"
      local_ip_cmd    = "hostname -I | cut -d' ' -f1"
      secrets_cmd     = "gcloud secrets versions access latest --secret='${var.secret_id}'"
      join_urls       = join(",", [for ip in var.voter_ips : "http://${ip}:8080"])
      zone            = zone
      cloud           = var.cloud
      region          = var.region
    })
  }) }
}

resource "google_compute_instance_template" "learner" {
  for_each     = var.zones
  name_prefix  = "${var.name}-learner-${each.key}-"
  machine_type = var.machine_type
  tags         = ["geiger-node"]
  labels       = { role = "learner", zone = each.key }

  disk {
    source_image = var.image
    disk_size_gb = var.learner_disk_gb
    boot         = true
    auto_delete  = true
  }

  network_interface {
    subnetwork = each.value.subnet_id
  }

  metadata = {
    user-data              = local.learner_user_data[each.key]
    block-project-ssh-keys = "true"
  }

  scheduling {
    automatic_restart   = true
    on_host_maintenance = "MIGRATE"
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  service_account {
    email  = var.service_account_email
    scopes = ["cloud-platform"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_instance_group_manager" "learner" {
  for_each           = var.zones
  name               = "${var.name}-learner-${each.key}"
  zone               = each.value.gcp_zone
  base_instance_name = "${var.name}-learner"
  target_size        = var.learners_per_zone

  version {
    instance_template = google_compute_instance_template.learner[each.key].id
  }

  named_port {
    name = "api"
    port = 8080
  }

  auto_healing_policies {
    health_check      = google_compute_health_check.readyz.id
    initial_delay_sec = 300
  }

  update_policy {
    type                  = "PROACTIVE"
    minimal_action        = "REPLACE"
    max_surge_fixed       = 1
    max_unavailable_fixed = 0
  }
}

resource "google_compute_backend_service" "api" {
  name                  = "${var.name}-api"
  protocol              = "TCP"
  port_name             = "api"
  load_balancing_scheme = "EXTERNAL"
  timeout_sec           = 30
  health_checks         = [google_compute_health_check.readyz.id]

  dynamic "backend" {
    for_each = concat(var.voter_instance_groups, [for g in google_compute_instance_group_manager.learner : g.instance_group])
    content {
      group           = backend.value
      balancing_mode  = "CONNECTION"
      max_connections = 10000
    }
  }

  log_config {
    enable = true
  }
}

resource "google_compute_ssl_policy" "modern" {
  name            = "${var.name}-tls"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_target_ssl_proxy" "api" {
  name             = "${var.name}-api"
  backend_service  = google_compute_backend_service.api.id
  ssl_certificates = [var.ssl_certificate_id]
  ssl_policy       = google_compute_ssl_policy.modern.id
}

resource "google_compute_global_forwarding_rule" "api" {
  name                  = "${var.name}-api"
  target                = google_compute_target_ssl_proxy.api.id
  ip_address            = google_compute_global_address.edge.address
  port_range            = "443"
  load_balancing_scheme = "EXTERNAL"
}
