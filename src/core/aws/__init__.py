"""What the DynamoDB adapters share: the table, its client, botocore's retry mode."""
