variable "node_id" {
  description = "The voter's Raft ID (node_id); unique, never reused."
  type        = number
}

variable "private_ip" {
  description = "The voter's fixed address (the reference topology: 10.10.<zone>.11)."
  type        = string
}

variable "zone" {
  description = "The zone label geiger reports (labels.zone)."
  type        = string
}

variable "cloud" {
  description = "The cloud label (labels.cloud)."
  type        = string
}

variable "region" {
  description = "The region label (labels.region)."
  type        = string
}

variable "aws_region" {
  description = "The AWS region (for the recover action's ARN)."
  type        = string
}

variable "availability_zone" {
  description = "The AWS availability zone of this voter."
  type        = string
}

variable "subnet_id" {
  description = "The subnet of the voter's zone."
  type        = string
}

variable "security_group_ids" {
  description = "The node security group."
  type        = list(string)
}

variable "instance_profile" {
  description = "Instance profile that may read the secrets."
  type        = string
}

variable "ami_id" {
  description = "A Debian or Ubuntu image with cloud-init and the AWS CLI."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type."
  type        = string
  default     = "m7i.large"
}

variable "data_volume_gib" {
  description = "Size of the ledger volume (deploy/README.md, \"Sizing a voter's disk\": about 5.5 GiB per million draws, snapshots included)."
  type        = number
  default     = 100
}

variable "data_volume_iops" {
  description = "gp3 IOPS of the ledger volume (every commit is an fsync)."
  type        = number
  default     = 6000
}

variable "data_volume_throughput" {
  description = "gp3 throughput of the ledger volume in MiB/s (deploy/README.md, \"Sizing a voter's disk\": about 22 KiB written per draw); 125 is gp3's baseline."
  type        = number
  default     = 125

  validation {
    condition     = var.data_volume_throughput >= 125 && var.data_volume_throughput <= 1000
    error_message = "gp3 throughput is 125 to 1000 MiB/s."
  }
}

variable "kms_key_arn" {
  description = "KMS key for the data volume; empty: the account's default EBS key."
  type        = string
  default     = ""
}

variable "cluster_name" {
  description = "cluster_name in the node config."
  type        = string
}

variable "alertmanagers" {
  description = "Alertmanager base URLs the leader pushes its alerts to."
  type        = list(string)
}

variable "bootstrap" {
  description = "The five voters of a brand-new cluster ([[bootstrap]] of every voter)."
  type = list(object({
    id     = number
    ip     = string
    zone   = string
    cloud  = string
    region = string
  }))
}

variable "release_url" {
  description = "Where the geiger binary is downloaded from at first boot."
  type        = string
}

variable "release_sha256" {
  description = "SHA-256 of that binary; the boot stops on a mismatch."
  type        = string
}

variable "secrets_arn" {
  description = "Secrets Manager secret with secrets.env."
  type        = string
}

variable "alarm_topic_arns" {
  description = "SNS topics that page (aws-alarms)."
  type        = list(string)
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}

variable "detailed_monitoring" {
  description = "EC2 detailed (1-minute) monitoring, so the status-check alarms see a failure within a minute."
  type        = bool
  default     = true
}
