output "edge_security_group_id" {
  description = "The load balancer's group."
  value       = aws_security_group.edge.id
}

output "node_security_group_id" {
  description = "The nodes' group (voters and learners)."
  value       = aws_security_group.node.id
}

output "node_instance_profile" {
  description = "Instance profile of every node."
  value       = aws_iam_instance_profile.node.name
}
