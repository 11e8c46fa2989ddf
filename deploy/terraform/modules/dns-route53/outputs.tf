output "health_check_ids" {
  description = "Health check per edge address."
  value       = { for k, h in aws_route53_health_check.edge : k => h.id }
}
