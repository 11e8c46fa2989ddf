output "public_ips" {
  description = "The edge's fixed public addresses, one per zone (the DNS records)."
  value       = [for e in aws_eip.edge : e.public_ip]
}

output "lb_arn_suffix" {
  description = "For CloudWatch dimensions."
  value       = aws_lb.edge.arn_suffix
}

output "target_group_arn_suffix" {
  description = "For CloudWatch dimensions."
  value       = aws_lb_target_group.api.arn_suffix
}

output "learner_groups" {
  description = "Learner auto-scaling group per zone."
  value       = { for k, g in aws_autoscaling_group.learner : k => g.name }
}
