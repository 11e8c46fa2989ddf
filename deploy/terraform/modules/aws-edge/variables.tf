variable "name" {
  description = "Name of the load balancer (and prefix of its parts)."
  type        = string
}

variable "vpc_id" {
  description = "The site's VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Subnet per zone label: one load-balancer address and one learner group per zone."
  type        = map(string)
}

variable "edge_security_group_id" {
  description = "The edge's security group (443 from anyone)."
  type        = string
}

variable "node_security_group_id" {
  description = "The nodes' security group."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for the public name."
  type        = string
}

variable "voter_instance_ids" {
  description = "The site's voters, by zone label: targets next to the learners."
  type        = map(string)
}

variable "voter_ips" {
  description = "The voters' addresses (a joining learner calls one of them)."
  type        = list(string)
}

variable "learners_per_zone" {
  description = "Learners in each zone's auto-scaling group (the reference topology: 1 in zone 1; a group per zone for scale-out)."
  type        = number
  default     = 1
}

variable "learners_max_per_zone" {
  description = "Upper bound of each learner group."
  type        = number
  default     = 4
}

variable "learner_instance_type" {
  description = "EC2 instance type of the learners."
  type        = string
  default     = "m7i.large"
}

variable "learner_volume_gib" {
  description = "A learner's disk (it holds the whole ledger, re-fetched by snapshot when replaced)."
  type        = number
  default     = 100
}

variable "ami_id" {
  description = "A Debian or Ubuntu image with cloud-init and the AWS CLI."
  type        = string
}

variable "instance_profile" {
  description = "Instance profile of the nodes."
  type        = string
}

variable "cluster_name" {
  description = "cluster_name in the node config."
  type        = string
}

variable "cloud" {
  description = "The cloud label."
  type        = string
}

variable "region" {
  description = "The region label."
  type        = string
}

variable "alertmanagers" {
  description = "Alertmanager base URLs."
  type        = list(string)
}

variable "release_url" {
  description = "Where the geiger binary is downloaded from."
  type        = string
}

variable "release_sha256" {
  description = "SHA-256 of that binary."
  type        = string
}

variable "secrets_arn" {
  description = "Secrets Manager secret with secrets.env."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse to delete the load balancer."
  type        = bool
  default     = true
}

variable "access_log_bucket" {
  description = "S3 bucket for the load balancer's access logs; empty: none."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
