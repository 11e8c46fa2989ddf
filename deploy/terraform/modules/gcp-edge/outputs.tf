output "edge_ip" {
  description = "The edge's global public address (a DNS record of the public name)."
  value       = google_compute_global_address.edge.address
}

output "backend_service" {
  description = "For monitoring filters."
  value       = google_compute_backend_service.api.name
}
