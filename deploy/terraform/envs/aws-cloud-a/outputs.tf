output "edge_ips" {
  description = "This site's edge addresses."
  value       = module.edge.public_ips
}

output "voter_node_toml" {
  description = "The rendered node config of each voter here."
  value       = { for k, v in module.voter : k => v.node_toml }
}

output "data_volume_ids" {
  description = "The ledger volumes (kept across instance replacement)."
  value       = { for k, v in module.voter : k => v.data_volume_id }
}

output "learner_groups" {
  description = "Learner auto-scaling group per zone."
  value       = module.edge.learner_groups
}
