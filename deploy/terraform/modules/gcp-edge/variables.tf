variable "name" {
  description = "Prefix of the edge's parts."
  type        = string
}

variable "zones" {
  description = "Per zone label: the GCP zone and its subnet (one learner group each)."
  type = map(object({
    gcp_zone  = string
    subnet_id = string
  }))
}

variable "voter_instance_groups" {
  description = "The site's voters' instance groups."
  type        = list(string)
}

variable "voter_ips" {
  description = "The voters' addresses (a joining learner calls one)."
  type        = list(string)
}

variable "ssl_certificate_id" {
  description = "Certificate of the public name (google_compute_ssl_certificate or managed)."
  type        = string
}

variable "learners_per_zone" {
  description = "Learners in each zone's group."
  type        = number
  default     = 1
}

variable "machine_type" {
  description = "Machine type of the learners."
  type        = string
  default     = "n2-standard-2"
}

variable "image" {
  description = "Debian or Ubuntu image with cloud-init and gcloud."
  type        = string
  default     = "ubuntu-os-cloud/ubuntu-2404-lts-amd64"
}

variable "learner_disk_gb" {
  description = "A learner's disk."
  type        = number
  default     = 100
}

variable "service_account_email" {
  description = "Service account of the nodes."
  type        = string
}

variable "cluster_name" {
  description = "cluster_name in the node config."
  type        = string
}

variable "cloud" {
  description = "Cloud label."
  type        = string
}

variable "region" {
  description = "Region label."
  type        = string
}

variable "alertmanagers" {
  description = "Alertmanager base URLs."
  type        = list(string)
}

variable "release_url" {
  description = "The geiger binary to install."
  type        = string
}

variable "release_sha256" {
  description = "Its SHA-256."
  type        = string
}

variable "secret_id" {
  description = "Secret Manager secret with secrets.env."
  type        = string
}
