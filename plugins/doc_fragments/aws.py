# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # AWS connection options, named as in amazon.aws.
    DOCUMENTATION = r"""
options:
  region:
    description:
      - The AWS region to use.
      - When not given, boto3 looks at E(AWS_REGION) and E(AWS_DEFAULT_REGION) and the profile.
    type: str
    aliases: [aws_region, ec2_region]
  endpoint_url:
    description:
      - URL of the API endpoint, for S3-compatible stores, VPC endpoints or a local test endpoint.
    type: str
    aliases: [aws_endpoint_url, ec2_url, s3_url]
  access_key:
    description:
      - AWS access key ID. When not given, boto3's credential chain is used
        (environment, shared credentials file, instance profile).
    type: str
    aliases: [aws_access_key_id, aws_access_key, ec2_access_key]
  secret_key:
    description:
      - AWS secret access key. Never logged.
    type: str
    aliases: [aws_secret_access_key, aws_secret_key, ec2_secret_key]
  session_token:
    description:
      - AWS session token for temporary credentials. Never logged.
    type: str
    aliases: [aws_session_token, security_token]
  profile:
    description:
      - Named profile from the shared credentials file.
    type: str
    aliases: [aws_profile]
  validate_certs:
    description:
      - Verify the TLS certificate of the API endpoint.
    type: bool
    default: true
requirements:
  - boto3
"""
