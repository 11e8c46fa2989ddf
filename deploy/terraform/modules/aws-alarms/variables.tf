variable "name" {
  description = "Prefix of the alarms and the topic."
  type        = string
}

variable "paging_endpoint" {
  description = "HTTPS intake of the paging service (the same service Alertmanager's pager receiver sends to)."
  type        = string
}

variable "sns_kms_key_id" {
  description = "KMS key for the topic."
  type        = string
  default     = "alias/aws/sns"
}

variable "voter_instance_ids" {
  description = "Voter instance per zone label."
  type        = map(string)
}

variable "lb_arn_suffix" {
  description = "The edge load balancer."
  type        = string
}

variable "target_group_arn_suffix" {
  description = "The edge's target group."
  type        = string
}

variable "disk_used_percent_max" {
  description = "Page above this share of the data volume used."
  type        = number
  default     = 80
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
