variable "name" {
  description = "Name of the site's VPC, e.g. geiger-cloud-a."
  type        = string
}

variable "cidr" {
  description = "The VPC's address range (the reference topology: 10.10.0.0/16 for cloud A)."
  type        = string
}

variable "zones" {
  description = "One subnet per zone: key = the zone label geiger uses (e.g. cloud-a-zone-1)."
  type = map(object({
    availability_zone = string
    cidr              = string
  }))
}

variable "flow_log_destination_arn" {
  description = "S3 bucket ARN for VPC flow logs; empty: no flow logs."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
