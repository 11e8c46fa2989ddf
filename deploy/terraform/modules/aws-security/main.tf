# Security groups per role (deploy/README.md, "Ports and firewall rules per
# role"). Only the edge's 443 is open to the world; everything else is
# member-to-member, edge-to-node, monitoring or operator traffic.

resource "aws_security_group" "edge" {
  name        = "${var.name}-edge"
  description = "geiger edge (network load balancer): the public API only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { role = "edge" })
}

resource "aws_security_group" "node" {
  name        = "${var.name}-node"
  description = "geiger node (voter or learner): API from the edge, members and operators; Raft from members"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { role = "node" })
}

# --- edge --------------------------------------------------------------
resource "aws_security_group_rule" "edge_public_api" {
  security_group_id = aws_security_group.edge.id
  description       = "public API (TLS terminates at the load balancer)"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_blocks       = var.public_api_cidrs
}

resource "aws_security_group_rule" "edge_to_node_api" {
  security_group_id        = aws_security_group.edge.id
  description              = "to the node API and /readyz"
  type                     = "egress"
  protocol                 = "tcp"
  from_port                = 8080
  to_port                  = 8080
  source_security_group_id = aws_security_group.node.id
}

# --- node ----------------------------------------------------------------
resource "aws_security_group_rule" "node_api_from_edge" {
  security_group_id        = aws_security_group.node.id
  description              = "API and health checks from the load balancer"
  type                     = "ingress"
  protocol                 = "tcp"
  from_port                = 8080
  to_port                  = 8080
  source_security_group_id = aws_security_group.edge.id
}

resource "aws_security_group_rule" "node_api_from_members" {
  security_group_id = aws_security_group.node.id
  description       = "API (/healthz probes of the link controller, forwarded calls) from the other members"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = 8080
  to_port           = 8080
  self              = true
}

resource "aws_security_group_rule" "node_raft_from_members" {
  security_group_id = aws_security_group.node.id
  description       = "internal port (Raft RPC, forwarded writes) from the other members only"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = 9080
  to_port           = 9080
  self              = true
}

resource "aws_security_group_rule" "node_api_from_operators" {
  security_group_id = aws_security_group.node.id
  description       = "API and /metrics from the monitoring hosts and the operator bastion"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = 8080
  to_port           = 8080
  cidr_blocks       = var.operator_cidrs
}

resource "aws_security_group_rule" "node_wireguard_from_sites" {
  security_group_id = aws_security_group.node.id
  description       = "WireGuard from the nodes of the other sites and the device hosts"
  type              = "ingress"
  protocol          = "udp"
  from_port         = 51820
  to_port           = 51820
  cidr_blocks       = var.peer_site_cidrs
}

resource "aws_security_group_rule" "node_to_members" {
  security_group_id = aws_security_group.node.id
  description       = "to the other members (API and internal port)"
  type              = "egress"
  protocol          = "tcp"
  from_port         = 8080
  to_port           = 9080
  self              = true
}

resource "aws_security_group_rule" "node_wireguard_to_sites" {
  security_group_id = aws_security_group.node.id
  description       = "WireGuard to the other sites"
  type              = "egress"
  protocol          = "udp"
  from_port         = 51820
  to_port           = 51820
  cidr_blocks       = var.peer_site_cidrs
}

resource "aws_security_group_rule" "node_to_alertmanager" {
  security_group_id = aws_security_group.node.id
  description       = "the leader pushes its alerts to Alertmanager"
  type              = "egress"
  protocol          = "tcp"
  from_port         = 9093
  to_port           = 9093
  cidr_blocks       = var.operator_cidrs
}

resource "aws_security_group_rule" "node_https_out" {
  security_group_id = aws_security_group.node.id
  description       = "HTTPS out: the release download at boot, the secret store and the cloud APIs"
  type              = "egress"
  protocol          = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_blocks       = var.https_egress_cidrs
}

# --- what a node may do in the cloud: read its site's secrets, send its
# metrics (the data-volume space alarm reads the CloudWatch agent's).
data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "node" {
  statement {
    sid       = "ReadTheClusterSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.secrets_arn]
  }
  statement {
    sid       = "PutAgentMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData has no resource-level permissions
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = ["CWAgent"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "node" {
  name   = "${var.name}-node"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}

resource "aws_iam_instance_profile" "node" {
  name = "${var.name}-node"
  role = aws_iam_role.node.name
}
