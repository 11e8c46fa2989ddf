variable "node_id" {
  description = "The voter's Raft ID."
  type        = number
}

variable "private_ip" {
  description = "Its fixed internal address."
  type        = string
}

variable "zone" {
  description = "Zone label (labels.zone)."
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

variable "gcp_region" {
  description = "GCP region."
  type        = string
}

variable "gcp_zone" {
  description = "GCP zone of the voter."
  type        = string
}

variable "subnet_id" {
  description = "The zone's subnet."
  type        = string
}

variable "machine_type" {
  description = "Compute Engine machine type."
  type        = string
  default     = "n2-standard-2"
}

variable "image" {
  description = "Debian or Ubuntu image with cloud-init and gcloud."
  type        = string
  default     = "ubuntu-os-cloud/ubuntu-2404-lts-amd64"
}

variable "data_disk_gb" {
  description = "Size of the ledger disk (deploy/README.md, \"Sizing a voter's disk\": about 5.5 GiB per million draws, snapshots included)."
  type        = number
  default     = 100
}

variable "kms_key_self_link" {
  description = "Cloud KMS key for the disks; empty: Google-managed keys."
  type        = string
  default     = ""
}

variable "service_account_email" {
  description = "Service account that may read the secret and write metrics."
  type        = string
}

variable "cluster_name" {
  description = "cluster_name in the node config."
  type        = string
}

variable "alertmanagers" {
  description = "Alertmanager base URLs."
  type        = list(string)
}

variable "bootstrap" {
  description = "The five voters ([[bootstrap]])."
  type = list(object({
    id     = number
    ip     = string
    zone   = string
    cloud  = string
    region = string
  }))
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
