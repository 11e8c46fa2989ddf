variable "zone_id" {
  description = "The Route 53 hosted zone of the public name."
  type        = string
}

variable "name" {
  description = "The public name, e.g. api.geiger.example."
  type        = string
}

variable "edges" {
  description = "Public addresses per edge: the AWS load balancer's (one per zone), the GCP load balancer's, the on-prem HAProxy VIP."
  type        = map(list(string))
}

variable "ttl" {
  description = "Record TTL in seconds (at most 60: a dead edge must leave resolvers' caches quickly)."
  type        = number
  default     = 30
  validation {
    condition     = var.ttl > 0 && var.ttl <= 60
    error_message = "The TTL must be between 1 and 60 seconds."
  }
}

variable "check_interval_s" {
  description = "Route 53 health check interval: 10 (fast) or 30."
  type        = number
  default     = 10
}

variable "failure_threshold" {
  description = "Failed checks before an address is dropped."
  type        = number
  default     = 2
}

variable "checker_regions" {
  description = "Route 53 checker regions (at least three)."
  type        = list(string)
  default     = ["us-east-1", "eu-west-1", "ap-southeast-1"]
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
