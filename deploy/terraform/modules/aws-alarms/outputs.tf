output "topic_arn" {
  description = "The paging topic."
  value       = aws_sns_topic.page.arn
}
