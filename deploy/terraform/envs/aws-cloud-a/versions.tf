terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
  }
  # State in S3 with locking; left out of the example (backend "s3" {...}),
  # the tests run `init -backend=false` or a local state.
}

provider "aws" {
  region = var.aws_region
  default_tags {
    tags = { system = "geiger", cluster = var.cluster_name, site = var.cloud }
  }
}
