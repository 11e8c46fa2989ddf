output "instance_group" {
  description = "The voter's instance group (a load-balancer backend)."
  value       = google_compute_instance_group.this.id
}

output "node_toml" {
  description = "The rendered node config."
  value       = local.node_toml
}
