variable "name" {
  description = "Name of the VPC."
  type        = string
}

variable "gcp_region" {
  description = "GCP region."
  type        = string
}

variable "zones" {
  description = "Subnet per zone label."
  type = map(object({
    gcp_zone = string
    cidr     = string
  }))
}

variable "operator_cidrs" {
  description = "Monitoring hosts and the operator bastion."
  type        = list(string)
}

variable "peer_site_cidrs" {
  description = "The other sites' WireGuard endpoints."
  type        = list(string)
}
