output "network_id" {
  description = "The VPC."
  value       = google_compute_network.this.id
}

output "subnet_ids" {
  description = "Subnet per zone label."
  value       = { for k, s in google_compute_subnetwork.zone : k => s.id }
}
