output "edge_ip" {
  description = "The edge's public address: put it in envs/aws-cloud-a other_edges."
  value       = module.edge.edge_ip
}

output "voter_node_toml" {
  description = "The rendered node config of each voter here."
  value       = { for k, v in module.voter : k => v.node_toml }
}
