# One public name over every edge (AWS, GCP, on-prem): a multivalue-answer
# record per edge address, each with its own HTTPS health check of
# /readyz through that edge. Route 53 answers only healthy addresses (up to
# eight), so a dead edge drops out of the answer; a short TTL bounds how
# long a resolver keeps it.

locals {
  # "aws-cloud-a/0" => "203.0.113.10", ...
  addresses = merge([for edge, ips in var.edges : { for i, ip in ips : "${edge}/${i}" => ip }]...)
}

resource "aws_route53_health_check" "edge" {
  for_each          = local.addresses
  type              = "HTTPS"
  ip_address        = each.value
  port              = 443
  fqdn              = var.name # SNI and Host: the edge's certificate is for the public name
  resource_path     = "/readyz"
  request_interval  = var.check_interval_s
  failure_threshold = var.failure_threshold
  measure_latency   = true
  regions           = var.checker_regions
  tags              = merge(var.tags, { Name = "geiger-edge-${each.key}" })
}

resource "aws_route53_record" "api" {
  for_each                         = local.addresses
  zone_id                          = var.zone_id
  name                             = var.name
  type                             = "A"
  ttl                              = var.ttl
  records                          = [each.value]
  set_identifier                   = each.key
  multivalue_answer_routing_policy = true
  health_check_id                  = aws_route53_health_check.edge[each.key].id
}
