output "instance_id" {
  description = "The voter's instance."
  value       = aws_instance.this.id
}

output "private_ip" {
  description = "The voter's fixed address."
  value       = var.private_ip
}

output "data_volume_id" {
  description = "The ledger volume."
  value       = aws_ebs_volume.data.id
}

output "node_toml" {
  description = "The rendered /etc/geiger/node.toml (compared with deploy/onprem/config/ by the tests)."
  value       = local.node_toml
}
