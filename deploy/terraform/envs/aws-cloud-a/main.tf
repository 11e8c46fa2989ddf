# Cloud A of the reference topology (deploy/README.md) on AWS: voters 1 and
# 2 in two zones, a learner group per zone behind a network load balancer,
# the alarms, and the public name over all three edges (this one, cloud B's
# on GCP, the on-prem HAProxy).

locals {
  voters_here = { for v in var.voters : v.zone => v if v.cloud == var.cloud }
  tags        = { system = "geiger" }
}

module "network" {
  source = "../../modules/aws-network"
  name   = "${var.cluster_name}-${var.cloud}"
  cidr   = var.vpc_cidr
  zones  = var.zones
  tags   = local.tags
}

# secrets.env lives here; its value is put in by the operator
# (aws secretsmanager put-secret-value), never by Terraform.
resource "aws_secretsmanager_secret" "node" {
  name        = "${var.cluster_name}/${var.cloud}/secrets.env"
  description = "geiger secrets.env: GEIGER_API__ADMIN_TOKEN, GEIGER_INTERNAL__CLUSTER_SECRET, GEIGER_SIGNING__KEY_ENCRYPTION_KEY"
  kms_key_id  = var.secrets_kms_key_id == "" ? null : var.secrets_kms_key_id
  tags        = local.tags
}

module "security" {
  source          = "../../modules/aws-security"
  name            = "${var.cluster_name}-${var.cloud}"
  vpc_id          = module.network.vpc_id
  operator_cidrs  = var.operator_cidrs
  peer_site_cidrs = var.peer_site_cidrs
  secrets_arn     = aws_secretsmanager_secret.node.arn
  tags            = local.tags
}

module "voter" {
  source                 = "../../modules/aws-voter"
  for_each               = local.voters_here
  node_id                = each.value.id
  private_ip             = each.value.ip
  zone                   = each.value.zone
  cloud                  = each.value.cloud
  region                 = each.value.region
  aws_region             = var.aws_region
  availability_zone      = module.network.availability_zones[each.key]
  subnet_id              = module.network.subnet_ids[each.key]
  security_group_ids     = [module.security.node_security_group_id]
  instance_profile       = module.security.node_instance_profile
  ami_id                 = var.ami_id
  instance_type          = var.voter_instance_type
  detailed_monitoring    = var.detailed_monitoring
  data_volume_gib        = var.data_volume_gib
  data_volume_throughput = var.data_volume_throughput
  cluster_name           = var.cluster_name
  alertmanagers          = var.alertmanagers
  bootstrap              = var.voters
  release_url            = var.release_url
  release_sha256         = var.release_sha256
  secrets_arn            = aws_secretsmanager_secret.node.arn
  alarm_topic_arns       = [module.alarms.topic_arn]
  tags                   = local.tags
}

module "edge" {
  source                 = "../../modules/aws-edge"
  name                   = "${var.cluster_name}-${var.cloud}"
  vpc_id                 = module.network.vpc_id
  subnet_ids             = module.network.subnet_ids
  edge_security_group_id = module.security.edge_security_group_id
  node_security_group_id = module.security.node_security_group_id
  certificate_arn        = var.certificate_arn
  voter_instance_ids     = { for k, v in module.voter : k => v.instance_id }
  voter_ips              = [for v in local.voters_here : v.ip]
  learners_per_zone      = var.learners_per_zone
  learners_max_per_zone  = var.learners_max_per_zone
  ami_id                 = var.ami_id
  instance_profile       = module.security.node_instance_profile
  cluster_name           = var.cluster_name
  cloud                  = var.cloud
  region                 = var.region_label
  alertmanagers          = var.alertmanagers
  release_url            = var.release_url
  release_sha256         = var.release_sha256
  secrets_arn            = aws_secretsmanager_secret.node.arn
  deletion_protection    = var.lb_deletion_protection
  tags                   = local.tags
}

# Terraform orders by resource, not by module: the topic exists before the
# voters' recover alarms, the edge alarms after the load balancer.
module "alarms" {
  source                  = "../../modules/aws-alarms"
  name                    = "${var.cluster_name}-${var.cloud}"
  paging_endpoint         = var.paging_endpoint
  voter_instance_ids      = { for k, v in module.voter : k => v.instance_id }
  lb_arn_suffix           = module.edge.lb_arn_suffix
  target_group_arn_suffix = module.edge.target_group_arn_suffix
  tags                    = local.tags
}

module "dns" {
  source  = "../../modules/dns-route53"
  zone_id = var.hosted_zone_id
  name    = var.public_name
  ttl     = var.dns_ttl
  edges = merge(
    { "${var.cloud}" = module.edge.public_ips },
    var.other_edges,
  )
  tags = local.tags
}
