"""What the DynamoDB adapters share: the table, its client (DynamoDB's JSON protocol, SigV4,
botocore's standard retries) and where that client connects."""
