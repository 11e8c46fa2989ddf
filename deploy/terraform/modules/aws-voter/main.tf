# One geiger voter on EC2: a fixed address on its own network interface, an
# encrypted data volume that outlives the instance, auto-recovery, and a
# cloud-init that renders the node config and the unit from deploy/onprem/.
#
# Replacing the instance (new AMI, new type) keeps the address and the
# ledger: the interface and the volume are separate resources, and the
# volume refuses to be destroyed by Terraform at all.

locals {
  node_toml = templatefile("${path.module}/../../templates/node.toml.tftpl", {
    node_id       = var.node_id
    listen_ip     = var.private_ip
    cluster_name  = var.cluster_name
    zone          = var.zone
    cloud         = var.cloud
    region        = var.region
    alertmanagers = var.alertmanagers
    bootstrap     = var.bootstrap
  })
  # The NVMe name EC2 gives an EBS volume carries the volume ID.
  data_device = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${replace(aws_ebs_volume.data.id, "-", "")}"
  user_data = templatefile("${path.module}/../../templates/cloud-init.yaml.tftpl", {
    node_toml = local.node_toml
    unit      = file("${path.module}/../../../onprem/geiger.service")
    boot_script = templatefile("${path.module}/../../templates/boot.sh.tftpl", {
      data_device     = local.data_device
      release_url     = var.release_url
      release_sha256  = var.release_sha256
      instance_id_cmd = "curl -fs -H \"X-aws-ec2-metadata-token: $(curl -fs -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)\" http://169.254.169.254/latest/meta-data/instance-id"
      local_ip_cmd    = "hostname -I | cut -d' ' -f1"
      secrets_cmd     = "aws secretsmanager get-secret-value --secret-id '${var.secrets_arn}' --query SecretString --output text"
      join_urls       = ""
      zone            = var.zone
      cloud           = var.cloud
      region          = var.region
    })
  })
}

resource "aws_network_interface" "this" {
  subnet_id       = var.subnet_id
  private_ips     = [var.private_ip]
  security_groups = var.security_group_ids
  description     = "geiger voter ${var.node_id} (${var.zone}): its fixed address"
  tags            = merge(var.tags, { Name = "geiger-voter-${var.node_id}" })
}

resource "aws_ebs_volume" "data" {
  availability_zone = var.availability_zone
  size              = var.data_volume_gib
  type              = "gp3"
  iops              = var.data_volume_iops
  throughput        = var.data_volume_throughput
  encrypted         = true
  kms_key_id        = var.kms_key_arn == "" ? null : var.kms_key_arn
  tags              = merge(var.tags, { Name = "geiger-voter-${var.node_id}-data", role = "voter-data" })

  # The ledger: never destroyed by Terraform. Retiring a voter's disk is a
  # deliberate act outside Terraform (deploy/README.md, "Remove a dead voter").
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_instance" "this" {
  ami                  = var.ami_id
  instance_type        = var.instance_type
  availability_zone    = var.availability_zone
  iam_instance_profile = var.instance_profile
  user_data            = local.user_data
  monitoring           = var.detailed_monitoring
  ebs_optimized        = true

  network_interface {
    network_interface_id = aws_network_interface.this.id
    device_index         = 0
  }

  root_block_device {
    encrypted   = true
    volume_type = "gp3"
    volume_size = 16
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  # EC2 restarts the instance on another host after a host failure.
  maintenance_options {
    auto_recovery = "default"
  }

  tags = merge(var.tags, { Name = "geiger-voter-${var.node_id}", role = "voter", zone = var.zone })

  # cloud-init runs once per instance: a new release or image reaches a
  # voter by an in-place upgrade or by replacing this one instance on
  # purpose (terraform apply -replace=...), never by Terraform restarting
  # every voter at once (deploy/README.md, "Rolling upgrade").
  lifecycle {
    ignore_changes = [user_data, ami]
  }
}

resource "aws_volume_attachment" "data" {
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.data.id
  instance_id = aws_instance.this.id
  # Stop the instance before detaching, so the ledger is flushed (the unit
  # flushes on SIGTERM).
  stop_instance_before_detaching = true
}

# Auto-recovery, explicitly: a failed system status check moves the
# instance to healthy hardware (same ID, address, volumes) and pages.
resource "aws_cloudwatch_metric_alarm" "recover" {
  alarm_name          = "geiger-voter-${var.node_id}-system-check-recover"
  alarm_description   = "voter ${var.node_id}: EC2 system status check failed; recovering the instance"
  namespace           = "AWS/EC2"
  metric_name         = "StatusCheckFailed_System"
  dimensions          = { InstanceId = aws_instance.this.id }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  alarm_actions       = concat(["arn:aws:automate:${var.aws_region}:ec2:recover"], var.alarm_topic_arns)
  ok_actions          = var.alarm_topic_arns
  tags                = var.tags
}
