# The site's edge: a network load balancer with a fixed public address per
# zone (the DNS records point at these), TLS on 443, one target group of
# every node of the site health-checked on /readyz, cross-zone; and the
# learners, one auto-scaling group per zone, registered in that group.

resource "aws_eip" "edge" {
  for_each = var.subnet_ids
  domain   = "vpc"
  tags     = merge(var.tags, { Name = "${var.name}-edge-${each.key}" })
}

resource "aws_lb" "edge" {
  name                             = var.name
  load_balancer_type               = "network"
  internal                         = false
  security_groups                  = [var.edge_security_group_id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection

  dynamic "subnet_mapping" {
    for_each = var.subnet_ids
    content {
      subnet_id     = subnet_mapping.value
      allocation_id = aws_eip.edge[subnet_mapping.key].id
    }
  }

  dynamic "access_logs" {
    for_each = var.access_log_bucket == "" ? [] : [var.access_log_bucket]
    content {
      bucket  = access_logs.value
      enabled = true
    }
  }

  tags = var.tags
}

resource "aws_lb_target_group" "api" {
  name                 = "${var.name}-api"
  port                 = 8080
  protocol             = "TCP"
  vpc_id               = var.vpc_id
  target_type          = "instance"
  deregistration_delay = 10
  # A draw is idempotent under retry; a connection cut by a dead target is
  # retried by the client on the next address.
  connection_termination = true

  health_check {
    protocol            = "HTTP"
    port                = "8080"
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 6
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = var.tags
}

resource "aws_lb_listener" "api" {
  load_balancer_arn = aws_lb.edge.arn
  port              = 443
  protocol          = "TLS"
  certificate_arn   = var.certificate_arn
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  alpn_policy       = "HTTP1Only"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }

  tags = var.tags
}

resource "aws_lb_target_group_attachment" "voter" {
  for_each         = var.voter_instance_ids
  target_group_arn = aws_lb_target_group.api.arn
  target_id        = each.value
  port             = 8080
}

# --- learners ----------------------------------------------------------
locals {
  learner_user_data = { for zone, _ in var.subnet_ids : zone => templatefile("${path.module}/../../templates/cloud-init.yaml.tftpl", {
    node_toml = templatefile("${path.module}/../../templates/node.toml.tftpl", {
      node_id       = "@NODE_ID@"
      listen_ip     = "@LOCAL_IP@"
      cluster_name  = var.cluster_name
      zone          = zone
      cloud         = var.cloud
      region        = var.region
      alertmanagers = var.alertmanagers
      bootstrap     = []
    })
    unit = file("${path.module}/../../../onprem/geiger.service")
    boot_script = templatefile("${path.module}/../../templates/boot.sh.tftpl", {
      data_device     = ""
      release_url     = var.release_url
      release_sha256  = var.release_sha256
      instance_id_cmd = "curl -fs -H \"X-aws-ec2-metadata-token: $(curl -fs -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)\" http://169.254.169.254/latest/meta-data/instance-id"
      local_ip_cmd    = "hostname -I | cut -d' ' -f1"
      secrets_cmd     = "aws secretsmanager get-secret-value --secret-id '${var.secrets_arn}' --query SecretString --output text"
      join_urls       = join(",", [for ip in var.voter_ips : "http://${ip}:8080"])
      zone            = zone
      cloud           = var.cloud
      region          = var.region
    })
  }) }
}

resource "aws_launch_template" "learner" {
  for_each      = var.learners_per_zone > 0 || var.learners_max_per_zone > 0 ? var.subnet_ids : {}
  name          = "${var.name}-learner-${each.key}"
  image_id      = var.ami_id
  instance_type = var.learner_instance_type
  user_data     = base64encode(local.learner_user_data[each.key])

  iam_instance_profile {
    name = var.instance_profile
  }

  network_interfaces {
    subnet_id                   = each.value
    security_groups             = [var.node_security_group_id]
    associate_public_ip_address = false
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      encrypted   = true
      volume_type = "gp3"
      volume_size = var.learner_volume_gib
    }
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-learner-${each.key}", role = "learner", zone = each.key })
  }

  tags = var.tags
}

resource "aws_autoscaling_group" "learner" {
  for_each                  = aws_launch_template.learner
  name                      = "${var.name}-learner-${each.key}"
  vpc_zone_identifier       = [var.subnet_ids[each.key]]
  min_size                  = var.learners_per_zone
  desired_capacity          = var.learners_per_zone
  max_size                  = max(var.learners_max_per_zone, var.learners_per_zone)
  health_check_type         = "ELB"
  health_check_grace_period = 300
  target_group_arns         = [aws_lb_target_group.api.arn]

  launch_template {
    id      = each.value.id
    version = each.value.latest_version
  }

  tag {
    key                 = "role"
    value               = "learner"
    propagate_at_launch = true
  }
}
