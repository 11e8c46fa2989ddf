variable "aws_region" {
  description = "AWS region of cloud A."
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
  default     = "cloud-a"
}

variable "region_label" {
  description = "The region label geiger reports (labels.region)."
  type        = string
  default     = "metro-1"
}

variable "vpc_cidr" {
  description = "The site's address range."
  type        = string
}

variable "zones" {
  description = "Subnet per zone label."
  type = map(object({
    availability_zone = string
    cidr              = string
  }))
}

variable "voters" {
  description = "All five voters of the cluster (every site's), as in [[bootstrap]]; this site runs those with cloud = var.cloud."
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
  description = "Alertmanager base URLs the leader pushes to."
  type        = list(string)
}

variable "ami_id" {
  description = "Debian or Ubuntu image with cloud-init and the AWS CLI."
  type        = string
}

variable "voter_instance_type" {
  description = "EC2 type of the voters."
  type        = string
  default     = "m7i.large"
}

variable "data_volume_gib" {
  description = "Ledger volume size per voter."
  type        = number
  default     = 100
}

variable "data_volume_throughput" {
  description = "gp3 throughput of each voter's ledger volume, MiB/s (deploy/README.md, \"Sizing a voter's disk\")."
  type        = number
  default     = 125
}

variable "learners_per_zone" {
  description = "Learners per zone group."
  type        = number
  default     = 1
}

variable "learners_max_per_zone" {
  description = "Upper bound of each learner group."
  type        = number
  default     = 4
}

variable "release_url" {
  description = "The geiger binary to install."
  type        = string
}

variable "release_sha256" {
  description = "Its SHA-256."
  type        = string
}

variable "secrets_kms_key_id" {
  description = "KMS key of the secrets; empty: the account's default."
  type        = string
  default     = ""
}

variable "certificate_arn" {
  description = "ACM certificate of the public name."
  type        = string
}

variable "paging_endpoint" {
  description = "HTTPS intake of the paging service."
  type        = string
}

variable "hosted_zone_id" {
  description = "Route 53 zone of the public name."
  type        = string
}

variable "public_name" {
  description = "The one public name."
  type        = string
}

variable "dns_ttl" {
  description = "TTL of the public name's records (at most 60)."
  type        = number
  default     = 30
}

variable "other_edges" {
  description = "The other edges' public addresses: cloud B (GCP) and on-prem."
  type        = map(list(string))
}

variable "lb_deletion_protection" {
  description = "Refuse to delete the load balancer."
  type        = bool
  default     = true
}

variable "detailed_monitoring" {
  description = "EC2 detailed monitoring of the voters (false only for the fake AWS, which lacks MonitorInstances)."
  type        = bool
  default     = true
}
