variable "name" {
  description = "Prefix of the policies."
  type        = string
}

variable "paging_endpoint" {
  description = "The paging service's webhook intake."
  type        = string
}

variable "backend_service" {
  description = "The edge's backend service name."
  type        = string
}

variable "disk_used_percent_max" {
  description = "Page above this share of a ledger disk used."
  type        = number
  default     = 80
}
