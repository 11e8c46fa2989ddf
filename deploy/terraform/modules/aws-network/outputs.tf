output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "The VPC's address range."
  value       = aws_vpc.this.cidr_block
}

output "subnet_ids" {
  description = "Subnet per zone label."
  value       = { for k, s in aws_subnet.zone : k => s.id }
}

output "availability_zones" {
  description = "Availability zone per zone label."
  value       = { for k, s in aws_subnet.zone : k => s.availability_zone }
}
