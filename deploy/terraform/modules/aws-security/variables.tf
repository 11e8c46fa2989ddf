variable "name" {
  description = "Prefix of the groups' names."
  type        = string
}

variable "vpc_id" {
  description = "The site's VPC."
  type        = string
}

variable "public_api_cidrs" {
  description = "Who may reach the public API on the edge: everyone."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "operator_cidrs" {
  description = "Monitoring hosts (Prometheus, Alertmanager) and the operator bastion."
  type        = list(string)
}

variable "peer_site_cidrs" {
  description = "Public addresses of the other sites' WireGuard endpoints (nodes and device hosts)."
  type        = list(string)
}

variable "https_egress_cidrs" {
  description = "Where nodes may open HTTPS connections (release download, secret store, cloud APIs). Narrow it to VPC endpoints where the site has them."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}

variable "secrets_arn" {
  description = "Secrets Manager secret holding secrets.env (GEIGER_API__ADMIN_TOKEN, GEIGER_INTERNAL__CLUSTER_SECRET, GEIGER_SIGNING__KEY_ENCRYPTION_KEY)."
  type        = string
}
