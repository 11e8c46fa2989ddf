# The alarms Beanstalk would have given, for a stateful cluster: instance
# status checks, unhealthy load-balancer targets, data-volume space. They
# page through the same route as Alertmanager's pages: an SNS topic with an
# HTTPS subscription to the paging service's CloudWatch/SNS intake (the
# receiver Alertmanager's `pager` route also sends to).

resource "aws_sns_topic" "page" {
  name              = "${var.name}-page"
  kms_master_key_id = var.sns_kms_key_id
  tags              = var.tags
}

resource "aws_sns_topic_subscription" "pager" {
  topic_arn              = aws_sns_topic.page.arn
  protocol               = "https"
  endpoint               = var.paging_endpoint
  endpoint_auto_confirms = true
}

resource "aws_cloudwatch_metric_alarm" "instance_check" {
  for_each            = var.voter_instance_ids
  alarm_name          = "${var.name}-voter-${each.key}-instance-check"
  alarm_description   = "voter in ${each.key}: the instance status check failed (the OS or the node is stuck)"
  namespace           = "AWS/EC2"
  metric_name         = "StatusCheckFailed_Instance"
  dimensions          = { InstanceId = each.value }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  alarm_actions       = [aws_sns_topic.page.arn]
  ok_actions          = [aws_sns_topic.page.arn]
  tags                = var.tags
}

# disk_used_percent comes from the CloudWatch agent on the voter, for the
# ledger's mount point.
resource "aws_cloudwatch_metric_alarm" "data_volume_space" {
  for_each            = var.voter_instance_ids
  alarm_name          = "${var.name}-voter-${each.key}-data-volume-space"
  alarm_description   = "voter in ${each.key}: the ledger volume is over ${var.disk_used_percent_max} % full"
  namespace           = "CWAgent"
  metric_name         = "disk_used_percent"
  dimensions          = { InstanceId = each.value, path = "/var/lib/private/geiger" }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.disk_used_percent_max
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.page.arn]
  ok_actions          = [aws_sns_topic.page.arn]
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "unhealthy_targets" {
  alarm_name          = "${var.name}-edge-unhealthy-targets"
  alarm_description   = "the edge sees a node whose /readyz fails"
  namespace           = "AWS/NetworkELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = var.lb_arn_suffix, TargetGroup = var.target_group_arn_suffix }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  alarm_actions       = [aws_sns_topic.page.arn]
  ok_actions          = [aws_sns_topic.page.arn]
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "no_healthy_target" {
  alarm_name          = "${var.name}-edge-no-healthy-target"
  alarm_description   = "the edge has no node whose /readyz passes: this site's edge answers nothing"
  namespace           = "AWS/NetworkELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = var.lb_arn_suffix, TargetGroup = var.target_group_arn_suffix }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.page.arn]
  ok_actions          = [aws_sns_topic.page.arn]
  tags                = var.tags
}
