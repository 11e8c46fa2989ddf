variable "project" {
  description = "GCP project."
  type        = string
}

variable "gcp_region" {
  description = "GCP region of cloud B."
  type        = string
}

variable "cluster_name" {
  description = "cluster_name of every node."
  type        = string
  default     = "geiger-prod"
}

variable "cloud" {
  description = "This site's cloud label."
  type        = string
  default     = "cloud-b"
}

variable "region_label" {
  description = "The region label geiger reports."
  type        = string
  default     = "metro-1"
}

variable "zones" {
  description = "Per zone label: the GCP zone and the subnet range."
  type = map(object({
    gcp_zone = string
    cidr     = string
  }))
}

variable "voters" {
  description = "All five voters of the cluster; this site runs those with cloud = var.cloud."
  type = list(object({
    id     = number
    ip     = string
    zone   = string
    cloud  = string
    region = string
  }))
  validation {
    condition     = length(var.voters) == 5
    error_message = "The reference topology has five voters."
  }
}

variable "operator_cidrs" {
  description = "Monitoring hosts and the operator bastion."
  type        = list(string)
}

variable "peer_site_cidrs" {
  description = "The other sites' WireGuard endpoints."
  type        = list(string)
}

variable "alertmanagers" {
  description = "Alertmanager base URLs."
  type        = list(string)
}

variable "learners_per_zone" {
  description = "Learners per zone group."
  type        = number
  default     = 1
}

variable "release_url" {
  description = "The geiger binary to install."
  type        = string
}

variable "release_sha256" {
  description = "Its SHA-256."
  type        = string
}

variable "ssl_certificate_id" {
  description = "Certificate of the public name."
  type        = string
}

variable "paging_endpoint" {
  description = "The paging service's webhook intake."
  type        = string
}
