# Cloud B's alarms, the GCP equivalents of aws-alarms: an instance not up,
# unhealthy load-balancer backends, the ledger disk filling (Ops Agent),
# sent to the same paging service as Alertmanager's pages.

resource "google_monitoring_notification_channel" "pager" {
  display_name = "${var.name} pager"
  type         = "webhook_tokenauth"
  labels = {
    url = var.paging_endpoint
  }
}

resource "google_monitoring_alert_policy" "instance_down" {
  display_name          = "${var.name}: a geiger node instance is not running"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.pager.id]
  conditions {
    display_name = "uptime metric absent for 2 minutes"
    condition_absent {
      filter   = "metric.type=\"compute.googleapis.com/instance/uptime\" AND metadata.user_labels.role=has_substring(\"voter\")"
      duration = "120s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_RATE"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "unhealthy_backends" {
  display_name          = "${var.name}: the edge sees a node whose /readyz fails"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.pager.id]
  conditions {
    display_name = "backend health below 1"
    condition_threshold {
      filter          = "metric.type=\"loadbalancing.googleapis.com/tcp_ssl_proxy/backend_health\" AND resource.label.backend_service_name=\"${var.backend_service}\""
      comparison      = "COMPARISON_LT"
      threshold_value = 1
      duration        = "120s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MIN"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "data_disk_space" {
  display_name          = "${var.name}: a voter's ledger disk is over ${var.disk_used_percent_max} % full"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.pager.id]
  conditions {
    display_name = "disk used percent"
    condition_threshold {
      filter          = "metric.type=\"agent.googleapis.com/disk/percent_used\" AND metric.label.device=has_substring(\"geiger-data\") AND metric.label.state=\"used\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.disk_used_percent_max
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}
