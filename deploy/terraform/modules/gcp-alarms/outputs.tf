output "channel" {
  description = "The paging channel."
  value       = google_monitoring_notification_channel.pager.id
}
