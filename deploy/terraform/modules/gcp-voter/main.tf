# One geiger voter on Compute Engine: a reserved internal address, a
# separate persistent disk that outlives the instance (prevent_destroy),
# live migration and automatic restart (GCP's auto-recovery), and the same
# cloud-init as on AWS, rendered from deploy/onprem/.

locals {
  node_toml = templatefile("${path.module}/../../templates/node.toml.tftpl", {
    node_id       = var.node_id
    listen_ip     = var.private_ip
    cluster_name  = var.cluster_name
    zone          = var.zone
    cloud         = var.cloud
    region        = var.region
    alertmanagers = var.alertmanagers
    bootstrap     = var.bootstrap
  })
  user_data = templatefile("${path.module}/../../templates/cloud-init.yaml.tftpl", {
    node_toml = local.node_toml
    unit      = file("${path.module}/../../../onprem/geiger.service")
    boot_script = templatefile("${path.module}/../../templates/boot.sh.tftpl", {
      data_device     = "/dev/disk/by-id/google-geiger-data"
      release_url     = var.release_url
      release_sha256  = var.release_sha256
      instance_id_cmd = "curl -fs -H 'Metadata-Flavor: Google' http://metadata.google.internal/computeMetadata/v1/instance/id"
      local_ip_cmd    = "hostname -I | cut -d' ' -f1"
      secrets_cmd     = "gcloud secrets versions access latest --secret='${var.secret_id}'"
      join_urls       = ""
      zone            = var.zone
      cloud           = var.cloud
      region          = var.region
    })
  })
}

resource "google_compute_address" "this" {
  name         = "geiger-voter-${var.node_id}"
  region       = var.gcp_region
  subnetwork   = var.subnet_id
  address_type = "INTERNAL"
  address      = var.private_ip
}

resource "google_compute_disk" "data" {
  name = "geiger-voter-${var.node_id}-data"
  zone = var.gcp_zone
  type = "pd-ssd"
  size = var.data_disk_gb
  # Encrypted at rest always; with a key of our own when one is given.
  dynamic "disk_encryption_key" {
    for_each = var.kms_key_self_link == "" ? [] : [var.kms_key_self_link]
    content {
      kms_key_self_link = disk_encryption_key.value
    }
  }
  labels = { role = "voter-data", node = tostring(var.node_id) }

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_compute_instance" "this" {
  name         = "geiger-voter-${var.node_id}"
  zone         = var.gcp_zone
  machine_type = var.machine_type
  tags         = ["geiger-node"]
  labels       = { role = "voter", zone = var.zone }

  boot_disk {
    initialize_params {
      image = var.image
      size  = 20
    }
    kms_key_self_link = var.kms_key_self_link == "" ? null : var.kms_key_self_link
  }

  attached_disk {
    source      = google_compute_disk.data.id
    device_name = "geiger-data"
  }

  network_interface {
    subnetwork = var.subnet_id
    network_ip = google_compute_address.this.address
  }

  metadata = {
    user-data              = local.user_data
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

  # As on AWS: a new release or image reaches a voter one at a time, on
  # purpose (deploy/README.md, "Rolling upgrade").
  lifecycle {
    ignore_changes = [metadata, boot_disk]
  }
}

# The voter as a backend of the site's load balancer: one unmanaged group
# per voter (an instance group holds instances of one zone).
resource "google_compute_instance_group" "this" {
  name      = "geiger-voter-${var.node_id}"
  zone      = var.gcp_zone
  instances = [google_compute_instance.this.id]
  named_port {
    name = "api"
    port = 8080
  }
}
